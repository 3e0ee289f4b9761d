// fiber.h: the cooperative context switch under the SIMT emulator (emu.h): each emulated CUDA
// thread runs on its own small stack, and the emulator's scheduler switches between them at
// barriers and warp operations. Header-only; safe to include from several translation units.
//
// Two implementations:
//   - x86-64 (ELF, System V ABI): a hand-written switch of ~20 instructions that saves the
//     callee-saved registers (rbx, rbp, r12-r15), the MXCSR and x87 control words, and swaps the
//     stack pointer (~15-25 ns a switch). It is a naked inline function, so every translation
//     unit that includes this header emits it in a COMDAT group and the linker (or LTO) keeps one
//     copy. (A global asm block would not do: LTO puts all of them in one assembly file, where the
//     copies clash.)
//   - elsewhere, or when FASTCONV_EMU_UCONTEXT is defined: POSIX ucontext (makecontext /
//     swapcontext), ~10x slower (each switch makes a signal-mask system call).
// Stacks are mmap'ed with a PROT_NONE guard page below them (an overflow faults instead of
// silently corrupting a neighbour). Under AddressSanitizer every switch is announced with
// __sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber, and stacks are larger
// (ASan's frames are).
//
// Protocol: the emulator uses a star: a scheduler context (the launching OS thread's own stack)
// switches to a fiber, the fiber switches back to it; fibers never switch to each other. A
// fiber's entry function must never return.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if !defined(FASTCONV_EMU_UCONTEXT) && !(defined(__x86_64__) && defined(__ELF__))
#define FASTCONV_EMU_UCONTEXT 1
#endif
#if defined(FASTCONV_EMU_UCONTEXT)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define FASTCONV_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FASTCONV_EMU_ASAN 1
#endif
#endif
#if defined(FASTCONV_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// ---- the x86-64 switch ----------------------------------------------------------------------
#if !defined(FASTCONV_EMU_UCONTEXT)
// Naked inline functions: each translation unit emits them in a COMDAT group (one copy survives
// the link, and LTO merges them like any inline function), without a compiler prologue. noipa
// (GCC) keeps interprocedural passes from treating their bodies as known: IPA-RA would otherwise
// assume the switch leaves the caller-saved registers alone (the asm declares no clobbers).
#if defined(__clang__)
#define FASTCONV_EMU_ASM_FUNCTION __attribute__((naked, noinline)) inline
#else
#define FASTCONV_EMU_ASM_FUNCTION __attribute__((naked, noipa)) inline
#endif
extern "C" {
// Saves the caller's registers on its stack, stores its stack pointer in *save_sp (rdi), loads
// load_sp (rsi) and restores the registers saved there: "returns" into the other context. A saved
// context, from its stack pointer upwards: MXCSR (4 bytes), x87 control word (2 bytes), 2 bytes
// padding, r15, r14, r13, r12, rbx, rbp, return address (64 bytes).
FASTCONV_EMU_ASM_FUNCTION void fastconv_emu_switch_v1(void** /*save_sp*/, void* /*load_sp*/) {
  asm(R"(
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");
}
// First code a new fiber runs (fiber::init sets it up as the return address): calls r12(r13);
// the callee never returns. Unwinders stop here (rip undefined).
FASTCONV_EMU_ASM_FUNCTION void fastconv_emu_fiber_start_v1() {
  asm(R"(
  .cfi_undefined rip
  movq %r13, %rdi
  callq *%r12
  ud2
)");
}
}  // extern "C"
#endif

namespace fastconv::emu::fiber {

#if defined(FASTCONV_EMU_ASAN)
inline constexpr std::size_t kStackBytes = 256 * 1024;
#else
inline constexpr std::size_t kStackBytes = 64 * 1024;  // per emulated CUDA thread
#endif

// One fiber stack: [lo, lo + size) usable, one guard page below lo.
struct Stack {
  unsigned char* lo = nullptr;
  std::size_t size = 0;
  unsigned color = 0;  // the top frame starts color * 64 bytes below the top (see init)
};

inline std::size_t page_bytes() {
  static const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
  return page;
}

inline Stack stack_alloc(std::size_t size = kStackBytes) {
  const std::size_t page = page_bytes();
  size = (size + page - 1) / page * page;
  void* map =
      mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) throw std::bad_alloc();
  if (mprotect(map, page, PROT_NONE) != 0) {
    munmap(map, size + page);
    throw std::bad_alloc();
  }
  static thread_local unsigned next_color = 0;
  return Stack{static_cast<unsigned char*>(map) + page, size, next_color++ % 64};
}

inline void stack_free(Stack& s) {
#if defined(FASTCONV_EMU_ASAN)
  // ASan does not clear the shadow of unmapped memory: frames' redzones left poisoned here
  // would be false reports in whatever is mapped at these addresses next.
  if (s.lo) __asan_unpoison_memory_region(s.lo, s.size);
#endif
  if (s.lo) munmap(s.lo - page_bytes(), s.size + page_bytes());
  s = Stack{};
}

// A suspended execution context. For a fiber, stack_* describe its stack; for the scheduler's
// context they are learnt from ASan when a fiber is first entered (used only under ASan).
struct Context {
#if defined(FASTCONV_EMU_UCONTEXT)
  ucontext_t uc;
  void (*fn)(void*) = nullptr;
  void* arg = nullptr;
#else
  void* sp = nullptr;
#endif
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
};

#if defined(FASTCONV_EMU_UCONTEXT)
inline void ucontext_entry(unsigned hi, unsigned lo) {
  Context* c = reinterpret_cast<Context*>((std::uintptr_t(hi) << 32) | std::uintptr_t(lo));
  c->fn(c->arg);
  std::abort();  // fn never returns
}
#endif

// Makes c a context that, when first switched to, runs fn(arg) on stack s. fn must never return.
inline void init(Context& c, const Stack& s, void (*fn)(void*), void* arg) {
  c.stack_bottom = s.lo;
  c.stack_size = s.size;
#if defined(FASTCONV_EMU_ASAN)
  // A fiber abandoned mid-kernel (after an error) leaves its frames' redzones poisoned.
  __asan_unpoison_memory_region(s.lo, s.size);
#endif
#if defined(FASTCONV_EMU_UCONTEXT)
  c.fn = fn;
  c.arg = arg;
  if (getcontext(&c.uc) != 0) throw std::runtime_error("fastconv emulator: getcontext failed");
  c.uc.uc_stack.ss_sp = s.lo;
  c.uc.uc_stack.ss_size = s.size;
  c.uc.uc_link = nullptr;
  const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(&c);
  // void (*)(void) is the type GCC lets any function pointer be cast to without a warning.
  makecontext(&c.uc, reinterpret_cast<void (*)(void)>(&ucontext_entry), 2, unsigned(p >> 32),
              unsigned(p & 0xffffffffu));
#else
  // Stacks are page-aligned, so their hot top frames would all fall in the same few L1 cache
  // sets; starting each 0-63 cache lines lower spreads them.
  std::uintptr_t top = reinterpret_cast<std::uintptr_t>(s.lo + s.size - 64 * s.color) & ~std::uintptr_t(15);
  // Return address at top - 24, so that the start routine runs with rsp = top - 16 (16-aligned,
  // as before a call) and calls fn with the ABI's alignment.
  void** frame = reinterpret_cast<void**>(top - 24 - 56);
  std::uint32_t mxcsr;
  std::uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  std::memset(frame, 0, 80);
  std::memcpy(frame, &mxcsr, 4);
  std::memcpy(reinterpret_cast<unsigned char*>(frame) + 4, &fpcw, 2);
  frame[3] = arg;                                              // r13
  frame[4] = reinterpret_cast<void*>(fn);                      // r12
  frame[7] = reinterpret_cast<void*>(&fastconv_emu_fiber_start_v1);  // return address
  c.sp = frame;
#endif
}

// Suspends the running context into `from` and resumes `to`. Returns when something switches
// back to `from` (in the emulator's star protocol, always the context that `to` was).
inline void switch_to(Context& from, Context& to) {
#if defined(FASTCONV_EMU_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, to.stack_bottom, to.stack_size);
#endif
  // Compiler barriers: whatever the compiler concludes about the switch routine, memory (shared
  // arrays, the built-in variables) may have changed when another fiber resumes this one.
  asm volatile("" ::: "memory");
#if defined(FASTCONV_EMU_UCONTEXT)
  swapcontext(&from.uc, &to.uc);
#else
  fastconv_emu_switch_v1(&from.sp, to.sp);
#endif
  asm volatile("" ::: "memory");
#if defined(FASTCONV_EMU_ASAN)
  // Whoever resumed us is `to` (star protocol): learn its stack (the scheduler's is not known
  // before the first switch).
  __sanitizer_finish_switch_fiber(fake_stack, &to.stack_bottom, &to.stack_size);
#endif
}

// The first thing a fiber's entry function does: completes the switch that started it and
// records the stack of `resumer` (the scheduler context that switched to it).
inline void entered(Context& resumer) {
#if defined(FASTCONV_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &resumer.stack_bottom, &resumer.stack_size);
#else
  (void)resumer;
#endif
}

}  // namespace fastconv::emu::fiber

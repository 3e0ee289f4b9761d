// tiles.h: the tile geometry of the tiled convolutions (Winograd, cpu/conv2d_winograd.cpp;
// FFT overlap-save, cpu/conv2d_fft.cpp), shared by the CPU and (later) CUDA kernels.
//
// A stride-1, dilation-1 convolution's output (P x Q per image and channel) is cut into
// tiles of mh x mw outputs, row-major over the image; edge tiles are clipped at P and Q.
// Tile (th, tw) reads the input window of (mh + R - 1) x (mw + S - 1) at
// (th * mh - pad_h, tw * mw - pad_w), zeros outside the image (the algorithm may read a
// larger, n x n window at the same origin: FFT's n x n tiles, Winograd's n = m + 2 both
// equal mh + R - 1 here). Tiles are numbered over every image of one group:
// t = image * tiles + th * tiles_w + tw, and processed in blocks of T consecutive tiles,
// L of them side by side in the lanes of one transform.
// Limits: stride 1, dilation 1 (the tiled algorithms' own); offsets fit index_t.
#pragma once
#include "params.h"

namespace fastconv::tiles {

// Static (internal linkage): this header is compiled into each per-ISA copy of the
// kernels, and every copy must keep its own code.
static FC_HD inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
static FC_HD inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// The grid of mh x mw output tiles of one image.
struct Grid {
  int mh = 0, mw = 0;          // outputs per tile
  int nh = 0, nw = 0;          // input window per tile: mh + R - 1, mw + S - 1
  index_t tiles_h = 0, tiles_w = 0, tiles = 0;
};

static FC_HD inline Grid make_grid(const ConvParams& p, int mh, int mw) {
  Grid g;
  g.mh = mh;
  g.mw = mw;
  g.nh = int(mh + p.R - 1);
  g.nw = int(mw + p.S - 1);
  g.tiles_h = ceil_div(p.P, mh);
  g.tiles_w = ceil_div(p.Q, mw);
  g.tiles = g.tiles_h * g.tiles_w;
  return g;
}

// One tile of group g: where its window and outputs are, how much of it is inside.
struct Tile {
  index_t x_off;   // offset of the window origin in its image-and-group's input channel 0
  index_t y_off;   // offset of the tile's first output in its image-and-group's output channel 0
  int ih0, iw0;    // window origin (may be negative: padding)
  int rows, cols;  // outputs of the tile inside P x Q (mh x mw but at the bottom/right edges)
  bool interior;   // window (nh x nw) entirely inside the image
  bool run;        // set by mark_runs on the first of L tiles side by side (see there)
};

// Tile t (over every image of group g: image t / tiles).
static FC_HD inline Tile tile_at(const ConvParams& p, const Grid& gr, index_t g, index_t t) {
  const index_t img = t / gr.tiles, lt = t % gr.tiles;
  const index_t th = lt / gr.tiles_w, tw = lt % gr.tiles_w;
  const index_t Cg = p.C_per_group(), Kg = p.K_per_group();
  Tile e;
  e.ih0 = int(th * gr.mh - p.pad_h);
  e.iw0 = int(tw * gr.mw - p.pad_w);
  e.x_off = (img * p.groups + g) * Cg * p.H * p.W + index_t(e.ih0) * p.W + e.iw0;
  e.y_off = (img * p.groups + g) * Kg * p.P * p.Q + th * gr.mh * p.Q + tw * gr.mw;
  const index_t rows = p.P - th * gr.mh, cols = p.Q - tw * gr.mw;
  e.rows = int(rows < gr.mh ? rows : gr.mh);
  e.cols = int(cols < gr.mw ? cols : gr.mw);
  e.interior = e.ih0 >= 0 && e.iw0 >= 0 && e.ih0 + gr.nh <= p.H && e.iw0 + gr.nw <= p.W;
  e.run = false;
  return e;
}

// geo[i] = tile t0 + i for i < T (any struct with Tile's fields), then marks the runs:
// geo[i].run (i a multiple of L) when tiles i .. i+L-1 are L full (mh x mw), interior
// tiles side by side in one row of tiles, so that lane l of a transform reads the window
// at x_off of tile i plus mw * l and writes the outputs at y_off plus mw * l.
template <int L, class TileT>
static FC_HD inline void fill(const ConvParams& p, const Grid& gr, index_t g, index_t t0, index_t T,
                              TileT* geo) {
  for (index_t i = 0; i < T; ++i) static_cast<Tile&>(geo[i]) = tile_at(p, gr, g, t0 + i);
  for (index_t i = 0; i + L <= T; i += L) {
    const Tile &a = geo[i], &z = geo[i + L - 1];
    geo[i].run = a.interior && z.interior && a.rows == gr.mh && z.cols == gr.mw &&
                 z.x_off - a.x_off == (L - 1) * gr.mw && z.y_off - a.y_off == (L - 1) * gr.mw;
  }
}

// How the tiles of one group (N * tiles of them, `all`) are cut into blocks, and the
// blocks of every group into work items: the fewest blocks of at most tmax tiles, then
// more, smaller blocks (of at least L tiles) when that makes the item count a multiple
// of the threads. outer: one item per thread at a time, each running its phases
// serially (enough items for every thread); else the items run one by one, each phase
// split over the threads. workers: threads with their own block buffers.
struct Blocks {
  index_t nblocks = 0;  // blocks per group
  index_t T = 0;        // tiles per block (the last may have fewer)
  index_t ldt = 0;      // T rounded up to L: the row stride of a block's buffers
  bool outer = false;
  index_t workers = 1;
};

template <int L>
static FC_HD inline Blocks split_blocks(index_t all, index_t tmax, index_t groups, int threads) {
  Blocks b;
  all = all < 1 ? 1 : all;
  groups = groups < 1 ? 1 : groups;
  index_t nb = ceil_div(all, tmax);
  if (threads > 1 && (groups * nb) % threads != 0 && groups * nb < 8 * threads) {
    for (index_t nb2 = nb + 1; ceil_div(all, nb2) >= L; ++nb2)
      if ((groups * nb2) % threads == 0) {
        nb = nb2;
        break;
      }
  }
  b.nblocks = nb;
  b.T = ceil_div(all, nb);
  b.ldt = round_up(b.T, L);
  const index_t items = groups * nb;
  b.outer = threads == 1 || (items >= threads && (items % threads == 0 || items >= 8 * threads));
  b.workers = b.outer ? threads : 1;
  return b;
}

}  // namespace fastconv::tiles

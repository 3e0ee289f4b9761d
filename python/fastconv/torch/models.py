"""Reference networks built from fastconv layers: LeNet-5, ResNet-18 and ResNet-50.

    net = resnet50()                       # fastconv Conv2d / MaxPool2d / AdaptiveAvgPool2d
    twin = resnet50(layers=torch.nn)       # the same net from torch.nn layers
    twin.load_state_dict(net.state_dict()) # parameter names as torchvision's

``layers`` is any namespace with Conv2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d classes
(fastconv.torch, the default, or torch.nn): the examples check one against the other and
``python -m fastconv bench --model`` times them. BatchNorm, ReLU and Linear are torch's.
The ResNets follow torchvision's definitions (v1.5: stride on the bottleneck's 3x3 conv),
names and initialisation, without depending on torchvision.
"""
from __future__ import annotations

from torch import nn

__all__ = ["lenet5", "resnet18", "resnet50", "ResNet", "BasicBlock", "Bottleneck"]


def _layers(layers):
    if layers is None:
        import fastconv.torch as layers
    return layers


def lenet5(num_classes=10, in_channels=1, layers=None):
    """LeNet-5 for 32x32 inputs: conv 5x5 (6) - pool - conv 5x5 (16) - pool - conv 5x5 (120)
    - 84 - classes; ReLU, average-pooling subsampling as in LeCun et al. 1998."""
    L = _layers(layers)
    return nn.Sequential(
        L.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), L.AvgPool2d(2),
        L.Conv2d(6, 16, 5), nn.ReLU(inplace=True), L.AvgPool2d(2),
        L.Conv2d(16, 120, 5), nn.ReLU(inplace=True), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, L, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = L.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = L.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, L, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = L.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = L.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = L.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: stem (7x7/2 conv, 3x3/2 max pool), four stages, global average
    pool, fully connected classifier."""

    def __init__(self, block, stages, num_classes=1000, layers=None):
        super().__init__()
        L = self._L = _layers(layers)
        self.inplanes = 64
        self.conv1 = L.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = L.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, 64, stages[0])
        self.layer2 = self._stage(block, 128, stages[1], 2)
        self.layer3 = self._stage(block, 256, stages[2], 2)
        self.layer4 = self._stage(block, 512, stages[3], 2)
        self.avgpool = L.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        del self._L

    def _stage(self, block, planes, blocks, stride=1):
        L = self._L
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(L.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        out = [block(L, self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        out += [block(L, self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes=1000, layers=None):
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, layers)


def resnet50(num_classes=1000, layers=None):
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, layers)

"""The model zoo (specs/): every architecture's parameter count and MACs pinned to the reference
numbers (torchvision's published num_params where torchvision has the model; hand-checked layer
tables otherwise), every spec passing `netspec check`, and torchvision's parameter names."""
from __future__ import annotations

from pathlib import Path

import pytest

import netspec
from netspec.cli import main

SPECS = Path(__file__).resolve().parent.parent / "specs"


def stats(spec: str, variant: str | None = None, **params):
    graph = netspec.load(SPECS / spec, variant=variant, params=params)
    return netspec.summary(graph)


def names(spec: str, variant: str | None = None, **params) -> set[str]:
    return {node.name for node in netspec.load(SPECS / spec, variant=variant, params=params)}


def weight(summary, node: str) -> tuple[int, ...]:
    return summary.row(node).param_specs["weight"].shape


# spec, variant, params, trainable params, MACs (batch 1)
TARGETS = [
    ("lenet5.yaml", None, {}, 61_706, 416_520),
    ("alexnet.yaml", None, {}, 61_100_840, 714_188_480),
    ("alexnet.yaml", "original", {}, 60_965_224, 724_406_816),
    ("vgg16.yaml", None, {}, 138_357_544, 15_470_264_320),
    ("googlenet.yaml", None, {}, 6_624_904, 1_498_376_192),
    ("googlenet.yaml", "paper", {}, 6_998_552, 1_582_671_872),
    ("inception_v2.yaml", None, {}, 11_295_240, 2_032_600_064),
    ("resnet18.yaml", None, {}, 11_689_512, 1_814_073_344),
    ("resnet50.yaml", None, {}, 25_557_032, 4_089_184_256),
    ("mobilenet_v1.yaml", None, {}, 4_231_976, 568_740_352),
    ("mobilenet_v1.yaml", None, {"width": 0.5}, 1_331_592, 149_497_088),
    ("efficientnet.yaml", None, {}, 5_288_548, 385_814_752),
    ("efficientnet.yaml", "b0", {}, 5_288_548, 385_814_752),
    ("yolov1.yaml", None, {}, 271_703_550, 20_285_153_280),
    ("unet.yaml", None, {}, 31_037_698, 48_171_581_440),
    ("unet.yaml", "original", {}, 31_030_658, 150_428_424_448),
]


@pytest.mark.parametrize("spec, variant, params, n_params, macs", TARGETS,
                         ids=[f"{t[0][:-5]}{':' + t[1] if t[1] else ''}{''.join(f'-{k}={v}' for k, v in t[2].items())}"
                              for t in TARGETS])
def test_params_and_macs(spec, variant, params, n_params, macs):
    s = stats(spec, variant, **params)
    assert (s.params, s.macs) == (n_params, macs)


# torchvision's published num_params (and MACs at the weights' evaluation crop)
@pytest.mark.parametrize("variant, n_params, macs", [
    ("b1", 7_794_184, 686_802_832),
    ("b2", 9_109_994, 1_087_529_456),
    ("b3", 12_233_232, 1_827_141_392),
    ("b4", 19_341_616, 4_393_771_024),
    ("b5", 30_389_784, 10_266_384_752),
    ("b6", 43_040_704, 19_067_593_536),
    ("b7", 66_347_960, 37_745_884_192),
])
def test_efficientnet_variants(variant, n_params, macs):
    s = stats("efficientnet.yaml", variant)
    assert (s.params, s.macs) == (n_params, macs)


@pytest.mark.parametrize("depth, n_params, macs", [
    (18, 11_689_512, 1_814_073_344),
    (34, 21_797_672, 3_663_761_408),
    (50, 25_557_032, 4_089_184_256),
    (101, 44_549_160, 7_801_405_440),
    (152, 60_192_808, 11_513_626_624),
])
def test_resnet_depths(depth, n_params, macs):
    s = stats("resnet.yaml", depth=depth)
    assert (s.params, s.macs) == (n_params, macs)


@pytest.mark.parametrize("variant, n_params, macs", [
    ("vgg11", 132_863_336, 7_609_090_048),
    ("vgg13", 133_047_848, 11_308_466_176),
    ("vgg16", 138_357_544, 15_470_264_320),
    ("vgg19", 143_667_240, 19_632_062_464),
])
def test_vgg_configurations(variant, n_params, macs):
    s = stats("vgg16.yaml", variant)
    assert (s.params, s.macs) == (n_params, macs)


def test_extends_pins_depth():
    assert netspec.load(SPECS / "resnet18.yaml").params["depth"] == 18
    assert netspec.load(SPECS / "resnet50.yaml").params["depth"] == 50
    assert stats("resnet50.yaml", depth=101).params == 44_549_160  # an extension's default stays overridable


def test_resnet_unknown_depth_is_an_error():
    with pytest.raises(netspec.SpecError, match="depth must be 18, 34, 50, 101 or 152"):
        netspec.load(SPECS / "resnet.yaml", params={"depth": 20})


ALL_SPECS = sorted(SPECS.glob("*.yaml")) + sorted((SPECS / "examples").glob("*.yaml"))


def test_zoo_is_complete():
    expected = {"lenet5", "alexnet", "vgg16", "googlenet", "inception_v2", "resnet", "resnet18", "resnet50",
                "mobilenet_v1", "efficientnet", "yolov1", "unet"}
    assert expected <= {p.stem for p in SPECS.glob("*.yaml")}


@pytest.mark.parametrize("spec", ALL_SPECS, ids=[p.relative_to(SPECS).as_posix() for p in ALL_SPECS])
def test_check_passes(spec, capsys):
    assert main(["check", str(spec)]) == 0
    assert capsys.readouterr().out.startswith("ok  ")


def test_check_all_at_once(capsys):
    assert main(["check", *map(str, ALL_SPECS)]) == 0
    assert f"{len(ALL_SPECS)} of {len(ALL_SPECS)} specs ok" in capsys.readouterr().out


def test_every_spec_documents_itself_and_takes_num_classes():
    import yaml
    for path in sorted(SPECS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert data.get("doc"), path.name
        if "extends" not in data:
            assert "num_classes" in data["params"], path.name


# --- torchvision's names ------------------------------------------------------------------------

def test_resnet_names():
    r18 = names("resnet18.yaml")
    assert {"conv1", "bn1", "layer1.0.conv1", "layer1.0.bn2", "layer2.0.downsample.0", "layer2.0.downsample.1",
            "layer4.1.conv2", "fc"} <= r18
    assert "layer1.0.downsample.0" not in r18
    assert "layer2.1.downsample.0" not in r18
    r50 = names("resnet50.yaml")
    assert {"layer1.0.downsample.0", "layer1.0.conv3", "layer3.5.bn3", "layer4.2.conv3"} <= r50
    assert "layer3.6.conv1" not in r50
    s = stats("resnet50.yaml")
    assert weight(s, "layer1.0.conv1") == (64, 64, 1, 1)
    assert weight(s, "layer2.0.conv2") == (128, 128, 3, 3)
    assert s.row("layer2.0.conv2").type.dims[-1] == 28  # v1.5: the 3×3 strides
    assert weight(s, "layer2.0.downsample.0") == (512, 256, 1, 1)
    assert weight(s, "fc") == (1000, 2048)


def test_googlenet_names():
    s = stats("googlenet.yaml")
    assert weight(s, "conv1.conv") == (64, 3, 7, 7)
    assert weight(s, "inception3a.branch2.1.conv") == (128, 96, 3, 3)
    assert weight(s, "inception3a.branch3.1.conv") == (32, 16, 3, 3)  # torchvision's 3×3 '5×5' branch
    assert s.row("inception3a.branch4.1.bn").param_specs["bias"].shape == (32,)
    assert s.row("inception5b.output").type.dims == (1024, 7, 7)
    paper = stats("googlenet.yaml", "paper")
    assert weight(paper, "inception3a.branch3.1.conv") == (32, 16, 5, 5)
    assert {"norm1", "norm2"} <= names("googlenet.yaml", "paper")
    assert "norm1" not in names("googlenet.yaml")


def test_alexnet_names():
    tv = stats("alexnet.yaml")
    assert weight(tv, "features.0") == (64, 3, 11, 11)
    assert weight(tv, "features.10") == (256, 256, 3, 3)
    assert weight(tv, "classifier.1") == (4096, 9216)
    assert weight(tv, "classifier.6") == (1000, 4096)
    caffe = stats("alexnet.yaml", "original")
    assert caffe.row("features.2").op == "lrn"
    assert weight(caffe, "features.4") == (256, 48, 5, 5)  # groups 2
    assert weight(caffe, "classifier.0") == (4096, 9216)


def test_vgg_names_follow_torchvision_make_layers():
    convs = {"vgg11": [0, 3, 6, 8, 11, 13, 16, 18],
             "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
             "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]}
    for variant, indices in convs.items():
        graph = netspec.load(SPECS / "vgg16.yaml", variant=variant)
        found = [int(n.name.split(".")[1]) for n in graph if n.op == "conv2d"]
        assert found == indices, variant
    assert {"classifier.0", "classifier.3", "classifier.6"} <= names("vgg16.yaml")


def test_efficientnet_names():
    s = stats("efficientnet.yaml")
    assert weight(s, "features.0.0") == (32, 3, 3, 3)
    assert weight(s, "features.1.0.block.0.0") == (32, 1, 3, 3)  # expand ratio 1: no expansion conv
    assert weight(s, "features.1.0.block.1.fc1") == (8, 32, 1, 1)
    assert weight(s, "features.1.0.block.2.0") == (16, 32, 1, 1)
    assert weight(s, "features.2.0.block.0.0") == (96, 16, 1, 1)
    assert weight(s, "features.2.0.block.2.fc1") == (4, 96, 1, 1)  # squeeze = block input // 4
    assert weight(s, "features.8.0") == (1280, 320, 1, 1)
    assert weight(s, "classifier.1") == (1000, 1280)
    n = names("efficientnet.yaml")
    assert "features.2.1.add" in n and "features.2.0.add" not in n
    assert "features.6.3.block.3.1" in n and "features.6.4.block.0.0" not in n
    b7 = names("efficientnet.yaml", "b7")
    assert "features.6.12.block.3.0" in b7 and "features.6.13.block.0.0" not in b7  # ceil(4 × 3.1) = 13


def test_inception_v2_names():
    s = stats("inception_v2.yaml")
    assert weight(s, "conv1_7x7_s2.conv") == (64, 3, 7, 7)
    assert weight(s, "inception_3a.double_3x3_2.conv") == (96, 96, 3, 3)
    assert s.row("inception_3a.pool").op == "avgpool2d"
    assert s.row("inception_5b.pool").op == "maxpool2d"
    assert s.row("inception_3c.output").type.dims == (576, 14, 14)
    assert s.row("inception_4e.output").type.dims == (1056, 7, 7)
    assert weight(s, "last_linear") == (1000, 1024)


def test_mobilenet_v1_width():
    s = stats("mobilenet_v1.yaml", width=0.5)
    assert weight(s, "features.0.0") == (16, 3, 3, 3)
    assert weight(s, "features.1.dw.0") == (16, 1, 3, 3)
    assert weight(s, "features.1.pw.0") == (32, 16, 1, 1)
    assert weight(s, "fc") == (1000, 512)
    assert stats("mobilenet_v1.yaml", resolution=128).row("features.9.pw.0").type.dims[-1] == 4


def test_unet_names_and_shapes():
    s = stats("unet.yaml")
    assert weight(s, "inc.double_conv.0") == (64, 3, 3, 3)
    assert weight(s, "down1.maxpool_conv.1.double_conv.3") == (128, 128, 3, 3)
    assert weight(s, "up1.up") == (1024, 512, 2, 2)
    assert weight(s, "up1.conv.double_conv.0") == (512, 1024, 3, 3)
    assert weight(s, "outc.conv") == (2, 64, 1, 1)
    assert s.row("outc.conv").type.dims == (2, 256, 256)
    original = stats("unet.yaml", "original")
    assert original.row("outc.conv").type.dims == (2, 388, 388)
    assert original.row("up1.crop").type.dims == (512, 56, 56)
    assert original.row("up4.crop").type.dims == (64, 392, 392)
    assert "up1.crop" not in names("unet.yaml")  # padded: the skip already has the size
    assert stats("unet.yaml", num_classes=5, base=32).row("outc.conv").type.c == 5


def test_yolov1_output():
    s = stats("yolov1.yaml")
    assert s.row("detections").type.dims == (7, 7, 30)
    assert stats("yolov1.yaml", num_classes=80).row("detections").type.dims == (7, 7, 90)


# --- the side-by-side examples ------------------------------------------------------------------

def test_factorized_5x5():
    five, three = stats("examples/conv5x5.yaml"), stats("examples/two_3x3.yaml")
    assert 25 * three.params == 18 * five.params
    assert 25 * three.macs == 18 * five.macs


def test_depthwise_separable_cost():
    standard, separable = stats("examples/conv_standard.yaml"), stats("examples/conv_depthwise_separable.yaml")
    # MobileNet v1 eq. 5: separable / standard = 1/N + 1/D_K²
    n, k = 512, 3
    assert separable.macs * n * k * k == standard.macs * (k * k + n)

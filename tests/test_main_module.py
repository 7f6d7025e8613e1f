from modeling_pvt.__main__ import main
from modeling_pvt.checkpoints.conversion import imagenet_id2label


def test_demo_prints_feature_maps_and_top5_at_two_sizes(capsys):
    main(["--variant", "pvt-tiny", "--sizes", "64x64,96x128"])
    output = capsys.readouterr().out
    assert "input (1, 3, 64, 64)" in output and "input (1, 3, 96, 128)" in output
    assert "stage4 (stride 32): (1, 512, 2, 2)" in output and "stage1 (stride  4): (1, 64, 24, 32)" in output
    assert sum(line.strip().endswith(tuple(imagenet_id2label().values())) for line in output.splitlines()) == 10


def test_imagenet_labels_are_complete():
    labels = imagenet_id2label()
    assert len(labels) == 1000 and labels[0].startswith("tench") and labels[999].startswith("toilet tissue")

"""training.data: class order, file checks and loaders, in-process and fast."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from training import data
from training.inference import build_eval_transform


def make_split(root, files: dict[str, list[str]]) -> None:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (10, 10), (200, 10, 10)).save(root / folder / name)


def test_find_classes_is_sorted_folder_order(tmp_path):
    make_split(tmp_path, {"010.ten": ["a.png"], "002.two": ["a.png"], "001.one": ["a.png"]})
    (tmp_path / ".cache").mkdir()
    assert data.find_classes(tmp_path) == ["001.one", "002.two", "010.ten"]


def test_find_classes_without_class_folders_is_an_error(tmp_path):
    with pytest.raises(data.DataError, match="has no class folders"):
        data.find_classes(tmp_path)
    with pytest.raises(data.DataError, match="does not exist"):
        data.find_classes(tmp_path / "missing")


def test_scan_split_labels_by_train_classes_and_names_what_it_skips(tmp_path):
    make_split(tmp_path, {"001.one": ["a.png", "b.png"], "003.three": ["c.png"]})
    (tmp_path / "001.one" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "001.one" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    split = data.scan_split("valid", tmp_path, ["000.zero", "001.one", "002.two"])
    assert [(p.name, label) for p, label in split.samples] == [("a.png", 1), ("b.png", 1)]
    reasons = {s["file"]: s["reason"] for s in split.skipped}
    assert set(reasons) == {"001.one/.DS_Store", "001.one/broken.jpg", "003.three/c.png"}
    assert "not a class of the train split" in reasons["003.three/c.png"]


def test_require_images_names_split_and_path(tmp_path):
    split = data.Split("test", tmp_path)
    with pytest.raises(data.DataError, match=f"split 'test' at {tmp_path} has no usable images"):
        data.require_images(split)


def test_check_image_accepts_any_mode(tmp_path):
    for mode in ("RGBA", "LA", "P", "L", "1", "CMYK", "I;16"):
        path = tmp_path / f"{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (9, 9)).save(path)
        assert data.check_image(path) is None, mode


def test_dataset_yields_normalised_rgb_tensors(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (20, 30), 128).save(path)
    dataset = data.ImageFolderDataset([(path, 4)], build_eval_transform(16, 18))
    image, label = dataset[0]
    assert image.shape == (3, 16, 16) and label == 4
    assert torch.allclose(image[0], torch.full((16, 16), (128 / 255 - 0.485) / 0.229), atol=1e-3)


def test_dataset_decodes_each_file_once_within_its_budget(tmp_path):
    """Decoded images are kept: a second epoch reads no file (here: the file is gone). Over
    the budget the dataset decodes again, so a large data set does not fill the memory."""
    gray, colour = tmp_path / "gray.png", tmp_path / "colour.png"
    Image.new("L", (20, 30), 128).save(gray)
    Image.new("RGBA", (20, 30), (10, 20, 30, 255)).save(colour)
    transform = build_eval_transform(16, 18)
    cached = data.ImageFolderDataset([(gray, 1), (colour, 2)], transform)
    first = [cached[0], cached[1]]
    assert cached.cached_bytes == 2 * 20 * 30 * 3
    small = data.ImageFolderDataset([(gray, 1), (colour, 2)], transform, cache_bytes=20 * 30 * 3)
    small[0], small[1]
    gray.unlink()
    colour.unlink()
    again = [cached[0], cached[1]]
    for (image, label), (image_again, label_again) in zip(first, again, strict=True):
        assert label == label_again and torch.equal(image, image_again)
    assert torch.equal(small[0][0], first[0][0])
    with pytest.raises(FileNotFoundError):
        small[1]


def test_train_loader_drops_a_last_batch_of_one(tmp_path):
    """BatchNorm cannot train on a batch of one at 1x1: such a last batch is dropped."""
    samples = list(range(17))
    assert len(data.make_loader(samples, 8, shuffle=True, workers=0, seed=0)) == 2
    assert len(data.make_loader(samples, 8, shuffle=False, workers=0, seed=0)) == 3
    assert len(data.make_loader(list(range(18)), 8, shuffle=True, workers=0, seed=0)) == 3


def test_train_transform_keeps_scale_and_flips_only_on_request():
    image = Image.new("RGB", (20, 20), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 10, 20))  # left half black
    no_flip = data.build_train_transform(16, 18, hflip=False)
    torch.manual_seed(0)
    outputs = [no_flip(image) for _ in range(5)]
    assert all(o.shape == (3, 16, 16) for o in outputs)
    assert all(o[:, :, 0].mean() < o[:, :, -1].mean() for o in outputs)  # black stays left


def test_find_classes_under_a_hidden_parent_folder(tmp_path):
    """The local cloud keeps job data under .mlops/: only the class folder's own name counts."""
    train = tmp_path / ".mlops" / "train"
    for name in ("000.zero", "001.one", ".cache"):
        (train / name).mkdir(parents=True)
    assert data.find_classes(train) == ["000.zero", "001.one"]

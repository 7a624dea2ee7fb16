"""`predict` and `evaluate` on any folder, with the finished mock run (`mock_run`) as the model.

- `predict`'s CSV gives the confusion matrix (and the probabilities) `evaluate` gives on the
  same folder of real CIFAR-10 JPEGs; JSONL holds the same top-k.
- Folders are searched recursively; a missing path fails before any work; an unreadable file is
  named, or skipped and listed.
- Flip TTA is the mean of the image's and its mirror's probabilities.
- `evaluate` refuses a folder whose class names are not the run's.
"""

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from jaxresnet import errors, evaluate, predict
from jaxresnet.data import cifar10_jpeg, decode
from tests import train_helpers as th

BATCH = 8  # One batch size for every call: the predictor compiles once.


@pytest.fixture(scope="module")
def predictor(mock_run) -> predict.Predictor:
  return predict.Predictor(mock_run[0])


@pytest.fixture(scope="module")
def digit_folder(cifar_jpeg_subset, tmp_path_factory):
  """The real test JPEGs of `cifar_jpeg_subset` in class folders named as the mock run's classes
  (TFDS's mock CIFAR-10 names them "0" to "9", in the order of the real ones)."""
  root = tmp_path_factory.mktemp("digits")
  for label, name in enumerate(cifar10_jpeg.CLASSES):
    shutil.copytree(cifar_jpeg_subset / "test" / name, root / "test" / str(label))
  return root


@pytest.fixture
def few_images(cifar_jpeg_subset, tmp_path):
  """A nested folder of 3 real JPEGs and a PNG, with a text file among them."""
  sources = sorted((cifar_jpeg_subset / "test").glob("*/0000.jpg"))[:4]
  names = ["a/x.jpg", "a/b/c/y.JPEG", "a/b/z.jpg", "a/w.png"]
  for source, name in zip(sources, names, strict=True):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).save(tmp_path / name)
  (tmp_path / "a/notes.txt").write_text("not an image")
  return tmp_path


@pytest.mark.slow  # evaluate's compilation besides predict's: heavy for the fast tier.
def test_predict_csv_gives_evaluates_confusion_matrix(mock_run, predictor, digit_folder, tmp_path):
  workdir, *_ = mock_run
  paths = decode.find_images([digit_folder / "test"])
  assert len(paths) == 100 and paths == sorted(paths)
  output = tmp_path / "predictions.csv"
  with output.open("w", newline="") as stream:
    rows = predict.write_predictions(predictor(paths, BATCH), predictor.class_names, 5, stream,
                                     predict.output_format(str(output)))  # fmt: skip
  table = list(csv.DictReader(output.open()))
  assert rows == len(table) == 100 and [row["path"] for row in table] == list(map(str, paths))
  assert list(table[0]) == ["path"] + [f"{c}_{i}" for i in range(1, 6) for c in ("class", "prob")]

  names = list(predictor.class_names)
  confusion = np.zeros((len(names), len(names)), np.int64)
  for row in table:
    confusion[names.index(row["path"].split("/")[-2]), names.index(row["class_1"])] += 1
  result = evaluate.evaluate_checkpoint(workdir, "latest", "test",
                                        f"imagefolder:{digit_folder}")  # fmt: skip
  np.testing.assert_array_equal(confusion, result["confusion_matrix"])
  # The same probabilities too, not only the same argmax (evaluate's order is shuffled).
  top1 = sorted(float(row["prob_1"]) for row in table)
  np.testing.assert_allclose(top1, np.sort(result["probabilities"].max(-1)), rtol=1e-5)


def test_jsonl_and_folder_recursion(predictor, few_images, tmp_path):
  explicit = few_images / "a/x.jpg"
  paths = decode.find_images([explicit, few_images / "a"])
  relative = [str(p.relative_to(few_images)) for p in paths]
  assert relative == ["a/x.jpg", "a/b/c/y.JPEG", "a/b/z.jpg", "a/w.png", "a/x.jpg"]
  batches = list(predictor(paths, BATCH))
  output = tmp_path / "predictions.jsonl"
  with output.open("w") as stream:
    predict.write_predictions(batches, predictor.class_names, 3, stream, "jsonl")
  records = [json.loads(line) for line in output.read_text().splitlines()]
  probabilities = np.concatenate([p for _, p in batches])
  assert [r["path"] for r in records] == list(map(str, paths))
  for record, expected in zip(records, probabilities, strict=True):
    order = np.argsort(-expected)[:3]
    assert record["classes"] == [predictor.class_names[i] for i in order]
    np.testing.assert_allclose(record["probabilities"], expected[order], rtol=1e-5)


def test_missing_paths_and_empty_folders_fail_before_any_work(few_images):
  with pytest.raises(errors.UserError, match=f"{few_images / 'nope.jpg'} does not exist"):
    decode.find_images([few_images / "a/x.jpg", few_images / "nope.jpg"])
  (few_images / "empty").mkdir()
  with pytest.raises(
    errors.UserError, match="holds no .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp images"
  ):
    decode.find_images([few_images / "empty"])


def test_unreadable_files_are_named_or_skipped_and_listed(predictor, few_images):
  bad = few_images / "a/b/bad.jpg"
  bad.write_bytes(b"not an image" * 20)
  paths = decode.find_images([few_images / "a"])
  with pytest.raises(errors.UserError, match=f"Cannot read the image {bad}.*--skip_unreadable"):
    list(predictor(paths, BATCH))
  unreadable = []
  predicted = [p for batch_paths, _ in predictor(paths, BATCH, unreadable) for p in batch_paths]
  assert predicted == [p for p in paths if p != bad]
  assert len(unreadable) == 1 and str(bad) in unreadable[0]


@pytest.mark.slow  # A second compilation (the doubled batch): heavy for the fast tier.
def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(mock_run, predictor, few_images):
  paths = decode.find_images([few_images / "a"])
  mirrored = []
  for path in paths:  # Lossless mirror images of the decoded pixels.
    mirrored.append(path.with_name(f"{path.stem}_mirrored.png"))
    Image.fromarray(np.asarray(decode.read_rgb(path))[:, ::-1]).save(mirrored[-1])
  plain, flipped = (
    np.concatenate([p for _, p in predictor(ps, BATCH)]) for ps in (paths, mirrored)
  )
  tta = predict.Predictor(mock_run[0], tta="hflip")
  averaged = np.concatenate([p for _, p in tta(paths, BATCH)])
  np.testing.assert_allclose(averaged, (plain + flipped) / 2, rtol=0, atol=1e-6)
  assert np.abs(plain - flipped).max() > 1e-3  # The mirror image is another input.


def test_evaluate_refuses_a_folder_with_other_classes(mock_run, cifar_jpeg_subset, tmp_path):
  jpeg = cifar_jpeg_subset / "test/cat/0000.jpg"
  for name in ("3", "5", "zebra"):
    (tmp_path / "test" / name).mkdir(parents=True)
    (tmp_path / "test" / name / "0.jpg").write_bytes(jpeg.read_bytes())
  expected = r"lacks \['0', '1', '2', '4', '6', '7', '8', '9'\] and has \['zebra'\] in their"
  with pytest.raises(errors.UserError, match=expected):
    evaluate.evaluate_checkpoint(mock_run[0], "latest", "test", f"imagefolder:{tmp_path}")


@pytest.mark.slow
def test_predict_cli_writes_csv_with_a_progress_line(mock_run, digit_folder, tmp_path):
  workdir = mock_run[0]
  command = [sys.executable, "-m", "jaxresnet.predict", f"--workdir={workdir}", "--top_k=3"]
  output = tmp_path / "predictions.csv"
  result = th.run([*command, f"--output={output}", str(digit_folder / "test")])
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(output.read_text().splitlines()) == 101 and not result.stdout
  assert "100/100 images | " in result.stderr.splitlines()[-1]
  missing = th.run([*command, str(tmp_path / "nope.jpg")])
  assert missing.returncode == errors.USER_ERROR_EXIT
  assert missing.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nope.jpg'}")

import numpy as np
import pytest
from PIL import Image

from sslx.data import davis


def write_sequence(root, name, frames, masks):
  (root / name / "frames").mkdir(parents=True)
  (root / name / "masks").mkdir(parents=True)
  for t, (frame, mask) in enumerate(zip(frames, masks)):
    Image.fromarray(frame).save(root / name / "frames" / f"{t:05d}.jpg", quality=95)
    Image.fromarray((mask * 255).astype(np.uint8)).save(root / name / "masks" / f"{t:05d}.png")


def test_sequences_load_in_order_and_bad_ones_are_skipped_and_named(tmp_path):
  rng = np.random.default_rng(0)
  frames = [np.full((24, 32, 3), 20 * t, np.uint8) for t in range(4)]
  masks = [rng.uniform(size=(24, 32)) > 0.5 for _ in range(4)]
  write_sequence(tmp_path, "good", frames, masks)
  write_sequence(tmp_path, "corrupt", frames, masks)
  (tmp_path / "corrupt" / "frames" / "00002.jpg").write_bytes(b"not a jpeg")
  write_sequence(tmp_path, "unpaired", frames, masks)
  (tmp_path / "unpaired" / "masks" / "00001.png").unlink()
  loaded, skipped = davis.load_sequences(tmp_path)
  assert [s.name for s in loaded] == ["good"]
  good = loaded[0]
  assert good.frames.shape == (4, 24, 32, 3) and good.masks.dtype == bool
  np.testing.assert_array_equal(good.masks, np.stack(masks))  # PNG masks are exact.
  assert np.abs(good.frames[:, 0, 0, 0].astype(int) - [0, 20, 40, 60]).max() <= 2  # File-name order.
  assert set(skipped) == {"corrupt", "unpaired"}
  assert "cannot read 00002.jpg" in skipped["corrupt"] and "00001.jpg" in skipped["unpaired"]
  with pytest.raises(ValueError, match=r"no sequence 'swan' in .*: choose among corrupt, good, unpaired"):
    davis.load_sequences(tmp_path, ["swan"])
  with pytest.raises(FileNotFoundError, match=r"DAVIS folder .* not found"):
    davis.load_sequences(tmp_path / "absent")

"""Video pretext tasks: inputs from ``batch["video"]``, (B, T, H, W, 3) RGB frames in [0, 1].

Shared here: the checks of a config's video section that several pretexts make."""


def check_video_and_rate(config, name: str) -> None:
  """One-line errors before compilation: ``config`` has no video section, or the pretext's
  ``fps`` (seconds are converted with it) is not the delivered rate, video.fps / video.frame_stride."""
  if "video" not in config:
    raise ValueError(f"{name} needs video data (config.video): start the experiment config from "
                     f"configs.base_video()")
  delivered_fps = config.video.fps / config.video.frame_stride
  if abs(config.pretext.fps - delivered_fps) > 1e-6:
    raise ValueError(f"{name}: pretext.fps {config.pretext.fps:g} is not the delivered rate video.fps / "
                     f"video.frame_stride = {delivered_fps:g}: set --config.pretext.fps={delivered_fps:g}")

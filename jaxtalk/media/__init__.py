"""Media files: probing, decoding, encoding, audio, face crops.

Used by jaxtalk (inference, commands, demo) and by data_pipelines; imports nothing from
jaxtalk.inference, jaxtalk.tasks, jaxtalk.train, jaxtalk.commands or data_pipelines.
One job per module:

  ffmpeg_run   find the ffmpeg binary and run it; `MediaError`, what every media failure raises
  probe        `probe`: size, frame rate, duration and audio rate from a file's header
  video        `read_video` (decode to uint8 frames) and `write_video` (H.264 mp4, with audio)
  audio        `read_audio` (any file to mono float32), `write_wav`, int16 conversions
  crop         box geometry: boxes to pixels, IoU, tubes, a clip's square crop box
  face_detect  OpenCV's bundled Haar detector and the square crop around the largest face
  portrait_crop  LivePortrait's landmark crop, paste-back, eye/lip ratios, 203-point model
"""

"""ROS 2 adapter for ssim_depth: message codecs, the depth node and tools (player, recorder, pipeline)."""

"""ROS 2 adapter for ssim_depth: message codecs, the depth node and a rosbag2 player."""

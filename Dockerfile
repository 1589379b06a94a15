# syntax=docker/dockerfile:1
# ssim_depth serving image: ROS 2 Kilted + the ssim_depth_core library + the ssim_depth node.
#
# Build (CPU, ONNX Runtime):
#   docker build -t ssim-depth .
# With RViz (desktop base image):
#   docker build --build-arg BASE_IMAGE=osrf/ros:kilted-desktop-noble -t ssim-depth:desktop .
# With TensorRT 10 (needs the NVIDIA Container Toolkit and `--gpus all` at run time):
#   docker build --build-arg INSTALL_TENSORRT=1 -t ssim-depth:trt .
#
# Run the node on a model exported with `ssim-depth export` (camera topics remapped on the command line):
#   docker run --rm -it --net=host --ipc=host -v "$PWD/models:/models" ssim-depth \
#     ros2 launch ssim_depth depth.launch.py model:=/models/depth.onnx \
#       image:=/camera/image_raw camera_info:=/camera/camera_info
#   TensorRT: docker run --gpus all ... ssim-depth:trt ros2 launch ssim_depth depth.launch.py \
#     model:=/models/depth.onnx backend:=tensorrt   (the engine is built on first start and cached in
#     /root/.cache/ssim_depth/engines: mount a volume there to keep it)
#   RViz: docker run -e DISPLAY -v /tmp/.X11-unix:/tmp/.X11-unix ... ssim-depth:desktop \
#     ros2 launch ssim_depth depth.launch.py model:=/models/depth.onnx rviz:=true
# Replay a recorded drive into it: docker run ... -v "$PWD/data:/data" ssim-depth \
#     ros2 run ssim_depth play /data/synthetic/bag --loop

ARG BASE_IMAGE=ros:kilted-ros-base-noble
FROM ${BASE_IMAGE}

ARG INSTALL_TENSORRT=0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG CUDA_APT_VERSION=12-8
ARG TENSORRT_VERSION=10.9.0.34

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PIP_CONSTRAINT=/etc/pip-constraints.txt

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-colcon-common-extensions curl \
    && rm -rf /var/lib/apt/lists/*

# The ROS 2 Python message extensions are compiled against Ubuntu's NumPy 1.x, which NumPy 2 cannot load;
# opencv-python-headless >= 4.12 requires NumPy 2.
RUN printf 'numpy<2\nopencv-python-headless<4.12\n' > /etc/pip-constraints.txt

# CPU PyTorch wheels (the CUDA ones are several GB); the tensorrt and onnxruntime backends do not need them.
RUN pip3 install --index-url "${TORCH_INDEX_URL}" torch torchvision

# Optional TensorRT 10 layer: the CUDA apt repository for headers and nvcc, TensorRT from its pip wheels.
# pycuda compiles against the CUDA headers and links the driver stub; the real driver comes from the host.
RUN if [ "${INSTALL_TENSORRT}" = "1" ]; then \
        curl -fsSL -o /tmp/cuda-keyring.deb \
            https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb \
        && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
        && apt-get update \
        && apt-get install -y --no-install-recommends build-essential \
            "cuda-cudart-dev-${CUDA_APT_VERSION}" "cuda-driver-dev-${CUDA_APT_VERSION}" "cuda-nvcc-${CUDA_APT_VERSION}" \
        && rm -rf /var/lib/apt/lists/* \
        && CUDA_ROOT=/usr/local/cuda PATH="/usr/local/cuda/bin:${PATH}" LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
            pip3 install "tensorrt-cu12==${TENSORRT_VERSION}" pycuda; \
    fi

# The library, distribution ssim-depth-core (its dependencies include onnxruntime and rosbags, which the node
# and the player use), then the ROS package ssim_depth.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ssim_depth_core ./ssim_depth_core
RUN pip3 install . \
    && source /opt/ros/kilted/setup.bash \
    && python3 -c "import ssim_depth_core.runtime, rclpy, sensor_msgs.msg, rosbags, onnxruntime"
COPY launch ./launch
COPY ros2_ws/src ./ros2_ws/src
RUN source /opt/ros/kilted/setup.bash \
    && colcon --log-base /tmp/colcon-log build --base-paths ros2_ws/src --build-base /tmp/colcon-build \
        --install-base /opt/ssim_depth --merge-install \
    && rm -rf /tmp/colcon-log /tmp/colcon-build

RUN printf '%s\n' '#!/bin/bash' 'set -e' 'source /opt/ros/kilted/setup.bash' \
        'source /opt/ssim_depth/setup.bash' 'exec "$@"' > /ros_entrypoint.sh \
    && chmod +x /ros_entrypoint.sh
WORKDIR /
ENTRYPOINT ["/ros_entrypoint.sh"]
CMD ["ros2", "launch", "ssim_depth", "depth.launch.py", "--show-args"]

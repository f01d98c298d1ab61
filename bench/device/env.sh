# Sourced by the GPU-host scripts (track_gpu.sh, train_gpu.sh) from the repository root: unpack the
# carried wheels and set the environment every run needs. Results go to $OUT (the device tool's).
bash bench/device/install.sh
export PYTHONPATH=/tmp/pydeps:$PWD/shared PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
export NEUAVATAR_TEST_VIDEOS=$PWD/.carry/clips  # the tests' real clips, carried by make_carry.py --clips
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"

#!/usr/bin/env bash
# Build kgweave-frontend (the native gRPC front end) into frontend/build/, where
# `kgweave serve` finds it. Needs a C++17 compiler, CMake, pkg-config and gRPC's C++ library:
#   Debian/Ubuntu: apt-get install g++ cmake pkg-config libgrpc++-dev
#   (--install-deps runs that apt-get when the library is missing; root or sudo)
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--install-deps" ]] && ! pkg-config --exists grpc++ 2>/dev/null; then
  sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends \
    g++ cmake make pkg-config libgrpc++-dev > /dev/null
fi
if ! pkg-config --exists grpc++ 2>/dev/null; then
  echo "frontend/build.sh: gRPC's C++ library is missing (apt-get install libgrpc++-dev)" >&2
  exit 1
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" > /dev/null
echo "built $(pwd)/build/kgweave-frontend"

# Shared by the native front end (frontend/) and the load generator (benchmarks/loadgen/):
# C++17, Release by default, gRPC's C++ library from pkg-config (Debian: libgrpc++-dev).
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()
find_package(PkgConfig REQUIRED)
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)

# An executable linked against gRPC's C++ library.
function(kgweave_grpc_executable name source)
  add_executable(${name} ${source})
  target_compile_options(${name} PRIVATE -Wall -Wextra -O2)
  target_link_libraries(${name} PRIVATE PkgConfig::GRPCPP pthread)
endfunction()

// kgweave-loadgen: a closed-loop gRPC load generator in C++ (for benchmarks/serve_load.py).
//
// N clients share one channel; each keeps one unary call in flight and sends the next as soon
// as the answer arrives, cycling through pre-serialized requests. It knows no .proto: requests
// are raw message bytes (u32 little-endian length, then the bytes, repeated, in one file) and
// the method is its full path. A native client costs a fraction of a Python client's CPU per
// call, so on a small machine the server, not the load generator, is what gets measured.
//
// Usage: kgweave-loadgen --target HOST:PORT --method /pkg.Service/Method --requests FILE
//                        [--clients N] [--seconds S] [--warmup N] [--timeout-ms MS]
// Prints one JSON object: calls (answered OK), errors, seconds, calls_per_s (OK calls),
// p50_ms, p99_ms, mean_ms (of OK calls), cpu_seconds (this process, user + system).

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  grpc::GenericStub* stub;
  std::string method;
  std::vector<grpc::ByteBuffer> requests;
  Clock::time_point stop_at;
  int timeout_ms;
  std::atomic<int> running{0};
  std::atomic<uint64_t> errors{0};
  std::mutex mu;
  std::condition_variable done;
};

class Client {
 public:
  Client(Shared* shared, size_t offset) : shared_(shared), next_(offset) {}

  void Start() {
    shared_->running.fetch_add(1);
    Issue();
  }

  std::vector<double> latencies_ms;

 private:
  void Issue() {
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(shared_->timeout_ms));
    response_.Clear();
    const grpc::ByteBuffer* request = &shared_->requests[next_ % shared_->requests.size()];
    next_ += 1;
    started_ = Clock::now();
    shared_->stub->UnaryCall(context_.get(), shared_->method, grpc::StubOptions(), request,
                             &response_, [this](grpc::Status status) { Done(status); });
  }

  void Done(const grpc::Status& status) {
    auto now = Clock::now();
    if (status.ok()) {  // failed calls count as errors only: fast refusals are no throughput
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(now - started_).count());
    } else {
      shared_->errors.fetch_add(1);
    }
    if (now < shared_->stop_at) {
      Issue();
      return;
    }
    if (shared_->running.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->done.notify_all();
    }
  }

  Shared* shared_;
  size_t next_;
  std::unique_ptr<grpc::ClientContext> context_;
  grpc::ByteBuffer response_;
  Clock::time_point started_;
};

std::vector<grpc::ByteBuffer> ReadRequests(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "kgweave-loadgen: cannot read " << path << "\n";
    std::exit(2);
  }
  std::vector<grpc::ByteBuffer> out;
  uint32_t length = 0;
  while (in.read(reinterpret_cast<char*>(&length), 4)) {
    std::string bytes(length, '\0');
    if (!in.read(bytes.data(), length)) break;
    grpc::Slice slice(bytes);
    out.emplace_back(&slice, 1);
  }
  if (out.empty()) {
    std::cerr << "kgweave-loadgen: no requests in " << path << "\n";
    std::exit(2);
  }
  return out;
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Runs `clients` closed-loop clients until `seconds` have passed; returns their latencies.
std::vector<double> Run(Shared* shared, int clients, double seconds) {
  shared->stop_at = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  std::vector<std::unique_ptr<Client>> pool;
  for (int i = 0; i < clients; ++i) pool.push_back(std::make_unique<Client>(shared, i * 7919));
  for (auto& client : pool) client->Start();
  {
    std::unique_lock<std::mutex> lock(shared->mu);
    shared->done.wait(lock, [shared] { return shared->running.load() == 0; });
  }
  std::vector<double> all;
  for (auto& client : pool)
    all.insert(all.end(), client->latencies_ms.begin(), client->latencies_ms.end());
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target, method, path;
  int clients = 1, warmup = 50, timeout_ms = 10000;
  double seconds = 10.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i], value = argv[i + 1];
    if (arg == "--target") target = value;
    else if (arg == "--method") method = value;
    else if (arg == "--requests") path = value;
    else if (arg == "--clients") clients = std::stoi(value);
    else if (arg == "--seconds") seconds = std::stod(value);
    else if (arg == "--warmup") warmup = std::stoi(value);
    else if (arg == "--timeout-ms") timeout_ms = std::stoi(value);
    else {
      std::cerr << "kgweave-loadgen: unknown option " << arg << "\n";
      return 2;
    }
  }
  if (target.empty() || method.empty() || path.empty()) {
    std::cerr << "usage: kgweave-loadgen --target HOST:PORT --method /pkg.Service/Method "
                 "--requests FILE [--clients N] [--seconds S] [--warmup N] [--timeout-ms MS]\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  Shared shared;
  shared.stub = &stub;
  shared.method = method;
  shared.requests = ReadRequests(path);
  shared.timeout_ms = timeout_ms;

  Run(&shared, 1, 0.0);  // connect
  for (int i = 0; i < warmup; i += clients) Run(&shared, clients, 0.0);
  shared.errors = 0;

  double cpu = CpuSeconds();
  auto began = Clock::now();
  std::vector<double> latencies = Run(&shared, clients, seconds);
  double elapsed = std::chrono::duration<double>(Clock::now() - began).count();
  cpu = CpuSeconds() - cpu;

  if (latencies.empty()) latencies.push_back(0.0);  // every call failed: see errors
  std::sort(latencies.begin(), latencies.end());
  auto at = [&](double q) {
    return latencies[std::min(latencies.size() - 1, static_cast<size_t>(q * latencies.size()))];
  };
  double mean = 0;
  for (double v : latencies) mean += v;
  mean /= static_cast<double>(latencies.size());
  std::printf(
      "{\"calls\": %zu, \"errors\": %llu, \"seconds\": %.3f, \"calls_per_s\": %.1f, "
      "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_ms\": %.3f, \"cpu_seconds\": %.3f}\n",
      latencies.size(), static_cast<unsigned long long>(shared.errors.load()), elapsed,
      latencies.size() / elapsed, at(0.50), at(0.99), mean, cpu);
  return 0;
}

// kgweave-frontend: the native gRPC front end of `kgweave serve`.
//
// It terminates HTTP/2 and gRPC in C++ and hands every call, as raw message bytes, to the
// Python engine over one stream socket (a socketpair inherited from `kgweave serve`). The
// engine runs the same servicers as the Python gRPC server, so answers, status codes and
// messages are identical; only the transport differs. The front end knows no .proto: it
// forwards any method, unary or streaming, as frames.
//
// The frames, their sizes, byte order (little-endian) and the start-up handshake are specified
// in frame_protocol.md; frame_protocol.h holds the constants (both generated, with the
// engine's kgweave/api/frame_protocol.py, from frame_protocol.toml).
// Frames written by many gRPC threads are coalesced by one writer thread, so a burst of
// calls reaches the engine in one read and is micro-batched there.
//
// Admission is the engine's: it refuses PredictLinks queries beyond KGWEAVE_QUEUE_MAX waiting
// (counted in queries, as on the Python front end). This front end only bounds the calls it
// holds (--max-in-flight, a safety bound far above any queue); the calls it refuses there
// (RESOURCE_EXHAUSTED) are reported to the engine in REFUSED frames, so that the engine's
// metrics count every refusal whichever side made it.
//
// Usage: kgweave-frontend --listen HOST:PORT --bridge-fd FD [--unary M1,M2,...]
//                         [--max-in-flight N] [--max-message-bytes N] [--grace-seconds S]
//                         [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
//        kgweave-frontend --version
// --tls-cert/--tls-key: serve TLS with this certificate chain and key (PEM files);
// --tls-client-ca: also require client certificates signed by these CAs (mTLS).
// --unary names the methods whose client sends exactly one message (full paths).
// First exchanges HELLO frames with the engine: on another frame protocol version it prints
// one line on stderr and exits with status 3. Prints "LISTENING <port>" on stdout once bound.
// SIGTERM/SIGINT: stop accepting calls, let the calls in flight finish for up to the grace
// period, then exit. Exits when the engine closes the socket.

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "frame_protocol.h"

#ifndef KGWEAVE_VERSION
#define KGWEAVE_VERSION "unknown"
#endif

namespace {

using namespace kgweave_frame;

constexpr char kSoftware[] = "kgweave-frontend " KGWEAVE_VERSION;
constexpr int kExitProtocol = 3;  // the engine speaks another frame protocol version

// Little-endian on every host (frame_protocol.md).
template <typename T>
void PutLE(std::string* out, T v) {
  char bytes[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(bytes, sizeof(T));
}
void PutU16(std::string* out, uint16_t v) { PutLE(out, v); }
void PutU32(std::string* out, uint32_t v) { PutLE(out, v); }
void PutU64(std::string* out, uint64_t v) { PutLE(out, v); }
void PutF64(std::string* out, double v) {
  uint64_t bits;
  static_assert(sizeof(bits) == sizeof(v) && sizeof(v) == 8, "f64 is 8 bytes");
  std::memcpy(&bits, &v, 8);
  PutU64(out, bits);
}
template <typename T>
T GetLE(const char* in) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}
uint16_t GetU16(const char* in) { return GetLE<uint16_t>(in); }
uint32_t GetU32(const char* in) { return GetLE<uint32_t>(in); }
uint64_t GetU64(const char* in) { return GetLE<uint64_t>(in); }

// length, kind, call id: the header of a frame whose payload has `payload` bytes.
void PutHeader(std::string* out, uint8_t kind, uint64_t id, size_t payload) {
  PutU32(out, static_cast<uint32_t>(kAfterLengthSize + payload));
  out->push_back(static_cast<char>(kind));
  PutU64(out, id);
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// One writer thread owns the socket's write side; producers append frames to a buffer.
class BridgeWriter {
 public:
  explicit BridgeWriter(int fd) : fd_(fd), thread_([this] { Run(); }) {}
  ~BridgeWriter() { Close(); }

  // Write what is queued, then stop the thread (idempotent).
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // A call of `method` was refused here: reported in the next write (one REFUSED frame per
  // method for all the refusals since the last one).
  void Refused(const std::string& method) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return;
    ++refused_[method];
    cv_.notify_one();
  }

  void Send(uint8_t type, uint64_t id, const char* payload, size_t size,
            const std::string* prefix = nullptr) {
    size_t extra = prefix ? prefix->size() : 0;
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return;  // the engine is gone: nobody reads frames any more
    PutHeader(&pending_, type, id, extra + size);
    if (prefix) pending_.append(*prefix);
    pending_.append(payload, size);
    cv_.notify_one();
  }

 private:
  void Run() {
    std::string batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !pending_.empty() || !refused_.empty(); });
        if (pending_.empty() && refused_.empty() && stop_) return;
        batch.swap(pending_);
        for (const auto& entry : refused_) {  // count (u32), then the method path
          uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(entry.second, UINT32_MAX));
          PutHeader(&batch, kRefused, 0, kRefusedPrefixSize + entry.first.size());
          PutU32(&batch, count);
          batch.append(entry.first);
        }
        refused_.clear();
      }
      size_t off = 0;
      while (off < batch.size()) {
        ssize_t n = ::send(fd_, batch.data() + off, batch.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          // the engine closed its end: the reader sees it too and fails the calls in flight
          std::lock_guard<std::mutex> lock(mu_);
          broken_ = true;
          pending_.clear();
          refused_.clear();
          break;
        }
        off += static_cast<size_t>(n);
      }
      batch.clear();
    }
  }

  int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  std::unordered_map<std::string, uint64_t> refused_;  // calls refused by method, not sent yet
  bool stop_ = false;
  bool broken_ = false;
  std::thread thread_;
};

class Call;

// Calls in flight by id; the reader thread finds a call here to deliver the engine's frames.
class CallTable {
 public:
  uint64_t TryAdd(Call* call, size_t limit);  // 0 when `limit` calls are in flight
  std::vector<Call*> AcquireAll();            // each with a reference held
  void Remove(uint64_t id);
  Call* Acquire(uint64_t id);  // with a reference held; release with Call::Unref

 private:
  std::mutex mu_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, Call*> calls_;
};

struct Shared {
  BridgeWriter* writer;
  CallTable calls;
  size_t max_in_flight;
  std::unordered_set<std::string> unary;
  std::atomic<bool> engine_gone{false};
};

class Call : public grpc::ServerGenericBidiReactor {
 public:
  Call(grpc::GenericCallbackServerContext* ctx, Shared* shared) : ctx_(ctx), shared_(shared) {
    std::lock_guard<std::mutex> lock(mu_);
    if (shared_->engine_gone.load()) {
      Reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the kgweave engine has stopped"));
      return;
    }
    id_ = shared_->calls.TryAdd(this, shared_->max_in_flight);
    if (id_ == 0) {
      shared_->writer->Refused(ctx_->method());
      Reject(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "the server has " + std::to_string(shared_->max_in_flight) +
                              " calls in flight; retry later"));
      return;
    }
    unary_ = shared_->unary.count(ctx_->method()) > 0;
    if (!unary_) {
      std::string open = Head();
      shared_->writer->Send(kOpen, id_, nullptr, 0, &open);
      sent_ = true;
    }
    StartRead(&request_);
  }

  // Finish a call the engine never hears of, under mu_.
  void Reject(grpc::Status status) {
    finishing_ = finished_ = true;
    Finish(std::move(status));
  }

  // OPEN's and UNARY's start (frame_protocol.md): the seconds to the call's deadline (f64,
  // negative for none), the lengths of the method path and of the `authorization` metadata,
  // then both. The engine checks the authorization: its rules are written once, there.
  std::string Head() const {
    double timeout = -1.0;
    auto deadline = ctx_->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      timeout = std::chrono::duration<double>(deadline - std::chrono::system_clock::now()).count();
      if (timeout < 0) timeout = 0;
    }
    std::string authorization;
    auto found = ctx_->client_metadata().find("authorization");
    if (found != ctx_->client_metadata().end()) {
      authorization.assign(found->second.data(),
                           std::min<size_t>(found->second.size(), UINT16_MAX));
    }
    std::string out;
    PutF64(&out, timeout);
    PutU16(&out, static_cast<uint16_t>(ctx_->method().size()));
    PutU16(&out, static_cast<uint16_t>(authorization.size()));
    out.append(ctx_->method());
    out.append(authorization);
    return out;
  }

  void OnReadDone(bool ok) override {
    if (unary_) {  // the one request: the whole call goes in one frame, no further read
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_ || cancelled_) return;
      if (!ok) {
        Reject(grpc::Status(grpc::StatusCode::INTERNAL, "expected exactly one request"));
        return;
      }
      std::string head = Head();
      std::string bytes = Flatten(request_);
      shared_->writer->Send(kUnary, id_, bytes.data(), bytes.size(), &head);
      sent_ = true;
      return;
    }
    if (ok) {
      std::string bytes = Flatten(request_);
      shared_->writer->Send(kMessage, id_, bytes.data(), bytes.size());
      request_.Clear();
      StartRead(&request_);
    } else {
      shared_->writer->Send(kHalfClose, id_, nullptr, 0);
    }
  }

  // The client cancelled, its deadline passed, or the server is shutting down: tell the
  // engine and finish now (every call must be finished, even a cancelled one, or shutdown
  // would wait for it).
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (sent_) shared_->writer->Send(kCancel, id_, nullptr, 0);  // the engine knows the call
    cancelled_ = true;
    if (!writing_) Abandon();  // else when the write in flight is done
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    outbox_.pop_front();  // the message just written (gRPC no longer uses it)
    if (!ok || cancelled_) {  // the client went away
      Abandon();
      return;
    }
    Pump();
  }

  void OnDone() override {
    if (id_ != 0) shared_->calls.Remove(id_);
    Unref();
  }

  // From the reader thread.
  void DeliverMessage(const char* data, size_t size, bool last) {
    grpc::Slice slice(data, size);  // copies into a gRPC slice
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    outbox_.emplace_back(&slice, 1);
    if (last) {
      finishing_ = true;
      status_ = grpc::Status::OK;
    }
    Pump();
  }

  void DeliverStatus(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    finishing_ = true;
    status_ = std::move(status);
    Pump();
  }

  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

 private:
  // Drop what is left to send and finish as cancelled, under mu_ with no write in flight.
  void Abandon() {
    outbox_.clear();
    finishing_ = true;
    if (!finished_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }

  // Start the next write, or the finish, under mu_.
  void Pump() {
    if (writing_ || finished_) return;
    if (!outbox_.empty()) {
      writing_ = true;
      if (finishing_ && outbox_.size() == 1) {
        finished_ = true;
        StartWriteAndFinish(&outbox_.front(), grpc::WriteOptions(), status_);
      } else {
        StartWrite(&outbox_.front());
      }
    } else if (finishing_) {
      finished_ = true;
      Finish(status_);
    }
  }

  grpc::GenericCallbackServerContext* ctx_;
  Shared* shared_;
  uint64_t id_ = 0;
  bool unary_ = false;
  grpc::ByteBuffer request_;
  std::mutex mu_;
  std::deque<grpc::ByteBuffer> outbox_;
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool sent_ = false;  // the engine has heard of this call (OPEN or UNARY went out)
  grpc::Status status_;
  std::atomic<int> refs_{1};
};

uint64_t CallTable::TryAdd(Call* call, size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  if (calls_.size() >= limit) return 0;
  uint64_t id = next_++;
  calls_.emplace(id, call);
  return id;
}

std::vector<Call*> CallTable::AcquireAll() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Call*> out;
  for (auto& entry : calls_) {
    entry.second->Ref();
    out.push_back(entry.second);
  }
  return out;
}

void CallTable::Remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(id);
}

Call* CallTable::Acquire(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(id);
  if (it == calls_.end()) return nullptr;
  it->second->Ref();
  return it->second;
}

class Service : public grpc::CallbackGenericService {
 public:
  explicit Service(Shared* shared) : shared_(shared) {}
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* ctx) override {
    return new Call(ctx, shared_);
  }

 private:
  Shared* shared_;
};

// Reads the engine's frames until the socket closes.
void ReadEngine(int fd, Shared* shared) {
  std::string buffer;
  std::vector<char> chunk(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(chunk.data(), static_cast<size_t>(n));
    size_t off = 0;
    while (buffer.size() - off >= kLengthSize) {
      uint32_t length = GetU32(buffer.data() + off);
      if (length < kAfterLengthSize) {
        std::cerr << "kgweave-frontend: malformed frame from the engine; stopping\n";
        return;
      }
      if (buffer.size() - off - kLengthSize < length) break;
      const char* frame = buffer.data() + off + kLengthSize;
      uint8_t type = static_cast<uint8_t>(frame[0]);
      uint64_t id = GetU64(frame + 1);
      const char* payload = frame + kAfterLengthSize;
      size_t size = length - kAfterLengthSize;
      if (Call* call = shared->calls.Acquire(id)) {
        if (type == kMessage || type == kLast) {
          call->DeliverMessage(payload, size, type == kLast);
        } else if (type == kStatus && size >= kStatusPrefixSize) {
          call->DeliverStatus(
              grpc::Status(static_cast<grpc::StatusCode>(GetU32(payload)),
                           std::string(payload + kStatusPrefixSize, size - kStatusPrefixSize)));
        }
        call->Unref();
      }
      off += kLengthSize + length;
    }
    buffer.erase(0, off);
  }
}

// Write all of `data` to `fd` (before the writer thread exists); false when the engine is gone.
bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, char* out, size_t size) {
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::read(fd, out + off, size - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

[[noreturn]] void ProtocolError(const std::string& why) {
  std::cerr << "kgweave-frontend: " << why << "\n";
  std::exit(kExitProtocol);
}

// The handshake (frame_protocol.md): send our HELLO, then read the engine's and check its
// version. Returns the engine's software name.
std::string Handshake(int fd) {
  std::string hello;
  std::string software = kSoftware;
  PutHeader(&hello, kHello, 0, kHelloPrefixSize + software.size());
  PutU32(&hello, kVersion);
  PutU16(&hello, static_cast<uint16_t>(software.size()));
  hello.append(software);
  if (!WriteAll(fd, hello)) ProtocolError("the engine closed the socket before the handshake");
  char head[kHeaderSize + kHelloPrefixSize];
  if (!ReadAll(fd, head, sizeof(head)) || static_cast<uint8_t>(head[kLengthSize]) != kHello ||
      GetU32(head) < kAfterLengthSize + kHelloPrefixSize ||
      GetU32(head) > kAfterLengthSize + kHelloPrefixSize + UINT16_MAX) {
    ProtocolError(
        "the engine did not start with a HELLO frame: it predates frame protocol versions; "
        "this kgweave-frontend speaks frame protocol " +
        std::to_string(kVersion));
  }
  uint32_t protocol = GetU32(head + kHeaderSize);
  size_t rest = GetU32(head) - kAfterLengthSize - kHelloPrefixSize;
  std::string engine(rest, '\0');
  if (!ReadAll(fd, engine.data(), rest)) ProtocolError("the engine closed the socket mid-HELLO");
  engine.resize(std::min<size_t>(GetU16(head + kHeaderSize + sizeof(uint32_t)), rest));
  if (protocol != kVersion) {
    ProtocolError("the engine (" + engine + ") speaks frame protocol " +
                  std::to_string(protocol) + ", this kgweave-frontend speaks " +
                  std::to_string(kVersion) + ": rebuild with bash frontend/build.sh");
  }
  return engine;
}

// The whole of a PEM file, or exit with one line naming it.
std::string ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().empty()) {
    std::cerr << "kgweave-frontend: cannot read the TLS " << what << " " << path << "\n";
    std::exit(1);
  }
  return text.str();
}

// Plain TCP, or TLS (with client certificates required when a client CA is given).
std::shared_ptr<grpc::ServerCredentials> Credentials(const std::string& cert,
                                                     const std::string& key,
                                                     const std::string& client_ca) {
  if (cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                        : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_key_cert_pairs.push_back({ReadPem(key, "key"), ReadPem(cert, "certificate")});
  if (!client_ca.empty()) options.pem_root_certs = ReadPem(client_ca, "client CA");
  return grpc::SslServerCredentials(options);
}

[[noreturn]] void Usage(const char* why) {
  std::cerr << "kgweave-frontend: " << why
            << "\nusage: kgweave-frontend --listen HOST:PORT --bridge-fd FD [--unary M1,M2]"
               " [--max-in-flight N] [--max-message-bytes N] [--grace-seconds S]"
               " [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen;
  std::unordered_set<std::string> unary;
  int fd = -1;
  size_t max_in_flight = 4096;
  int max_message = 64 << 20;
  double grace = 10.0;
  std::string tls_cert, tls_key, tls_client_ca;
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::printf("%s (frame protocol %u)\n", kSoftware, kVersion);
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) Usage(("missing value for " + arg).c_str());
    std::string value = argv[++i];
    if (arg == "--listen") listen = value;
    else if (arg == "--bridge-fd") fd = std::atoi(value.c_str());
    else if (arg == "--unary") {
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        if (comma == std::string::npos) comma = value.size();
        if (comma > start) unary.insert(value.substr(start, comma - start));
        start = comma + 1;
      }
    }
    else if (arg == "--max-in-flight") max_in_flight = std::strtoul(value.c_str(), nullptr, 10);
    else if (arg == "--max-message-bytes") max_message = std::atoi(value.c_str());
    else if (arg == "--grace-seconds") grace = std::atof(value.c_str());
    else if (arg == "--tls-cert") tls_cert = value;
    else if (arg == "--tls-key") tls_key = value;
    else if (arg == "--tls-client-ca") tls_client_ca = value;
    else Usage(("unknown option " + arg).c_str());
  }
  if (listen.empty() || fd < 0) Usage("--listen and --bridge-fd are required");
  if (tls_cert.empty() != tls_key.empty()) Usage("--tls-cert and --tls-key go together");
  if (!tls_client_ca.empty() && tls_cert.empty()) Usage("--tls-client-ca needs --tls-cert");
  Handshake(fd);  // before listening: a mismatched pair never takes a call

  // Signals are taken by sigwait below, not by the gRPC threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  BridgeWriter writer(fd);
  Shared shared{&writer, {}, max_in_flight, std::move(unary)};
  Service service(&shared);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, Credentials(tls_cert, tls_key, tls_client_ca), &port);
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "kgweave-frontend: cannot listen on " << listen << " (in use?)\n";
    return 1;
  }
  std::printf("LISTENING %d\n", port);
  std::fflush(stdout);

  std::thread reader([&] {
    ReadEngine(fd, &shared);
    shared.engine_gone = true;  // new calls: UNAVAILABLE
    for (Call* call : shared.calls.AcquireAll()) {  // calls in flight: UNAVAILABLE now
      call->DeliverStatus(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "the kgweave engine has stopped"));
      call->Unref();
    }
    kill(getpid(), SIGTERM);  // the engine is gone: stop serving
  });

  int sig = 0;
  sigwait(&signals, &sig);
  auto until = std::chrono::system_clock::now() +
               std::chrono::milliseconds(static_cast<int64_t>(grace * 1000));
  server->Shutdown(until);  // no new calls; calls in flight get the grace period
  server->Wait();
  writer.Close();  // the last frames (cancellations) reach the engine
  ::shutdown(fd, SHUT_RDWR);
  reader.join();
  return 0;
}

package io.kgweave.neo4j;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.Deadline;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.netty.shaded.io.netty.buffer.Unpooled;
import io.grpc.netty.shaded.io.netty.handler.codec.http2.DefaultHttp2HeadersDecoder;
import io.grpc.netty.shaded.io.netty.handler.codec.http2.Http2Exception;
import io.grpc.netty.shaded.io.netty.handler.codec.http2.Http2Headers;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

/**
 * A gRPC channel for unary calls over plaintext HTTP/2 whose calls run entirely on the calling
 * thread: it writes the request and reads the answer on a pooled blocking socket, one call per
 * connection at a time.
 *
 * <p>Why: grpc-java's Netty transport hands every call to its event loop thread and back (the
 * write wakes the event loop, the answer wakes it again, which then wakes the caller). Measured
 * on a busy 2-core machine, a Java client making one call at a time after idle paid about 2.5 ms
 * more per call than the C-core Python client that answers on the caller's thread
 * (docs/benchmarks.md, "Link prediction from Cypher"). Here the only wake-up is the caller's
 * own, when the answer arrives. Procedures call the server one call at a time per Cypher
 * transaction, so a small pool of connections (one per concurrent call) serves them.
 *
 * <p>What it speaks: HTTP/2 with prior knowledge (h2c), the gRPC wire format without
 * compression, deadlines as {@code grpc-timeout}, metadata as headers (the bearer token), flow
 * control both ways; header blocks are decoded with Netty's HPACK decoder (shaded in grpc-java).
 * TLS and streaming methods are left to grpc-java's Netty channel ({@link KgweaveClient}).
 */
final class DirectChannel extends Channel {
  private static final byte[] PREFACE =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".getBytes(StandardCharsets.US_ASCII);
  private static final int DATA = 0x0;
  private static final int HEADERS = 0x1;
  private static final int RST_STREAM = 0x3;
  private static final int SETTINGS = 0x4;
  private static final int PUSH_PROMISE = 0x5;
  private static final int PING = 0x6;
  private static final int GOAWAY = 0x7;
  private static final int WINDOW_UPDATE = 0x8;
  private static final int CONTINUATION = 0x9;
  private static final int END_STREAM = 0x1;
  private static final int ACK = 0x1;
  private static final int END_HEADERS = 0x4;
  private static final int PADDED = 0x8;
  private static final int PRIORITY = 0x20;
  private static final int DEFAULT_WINDOW = 65_535;
  private static final int MAX_WINDOW = Integer.MAX_VALUE;
  /** The most idle connections kept open. */
  private static final int MAX_IDLE = 32;
  /** Largest header block accepted (a long grpc-message fits). */
  private static final long MAX_HEADER_LIST_BYTES = 1 << 20;
  /** A connection is retired before its stream ids run out. */
  private static final int LAST_STREAM_ID = 1 << 30;

  private final String host;
  private final int port;
  private final String authority;
  private final int maxInboundBytes;
  private final ConcurrentLinkedDeque<Connection> idle = new ConcurrentLinkedDeque<>();
  private volatile boolean closed;

  /** {@code address}: host:port, [ipv6]:port, optionally prefixed with dns:///. */
  DirectChannel(String address, int maxInboundBytes) {
    String target = address.startsWith("dns:///") ? address.substring(7) : address;
    int colon = target.lastIndexOf(':');
    if (colon <= 0 || target.endsWith("]")) {
      throw KgweaveException.invalidArgument(
          "kgweave.address must be host:port, not '" + address + "'");
    }
    String h = target.substring(0, colon);
    this.host = h.startsWith("[") && h.endsWith("]") ? h.substring(1, h.length() - 1) : h;
    try {
      this.port = Integer.parseInt(target.substring(colon + 1));
    } catch (NumberFormatException e) {
      throw KgweaveException.invalidArgument(
          "kgweave.address must be host:port, not '" + address + "'");
    }
    this.authority = target;
    this.maxInboundBytes = maxInboundBytes;
  }

  /** Simple enough a target for this channel (host:port)? */
  static boolean supports(String address) {
    String target = address.startsWith("dns:///") ? address.substring(7) : address;
    int colon = target.lastIndexOf(':');
    if (colon <= 0 || target.contains("/")) {
      return false;
    }
    try {
      int port = Integer.parseInt(target.substring(colon + 1));
      return port > 0 && port < 65_536;
    } catch (NumberFormatException e) {
      return false;
    }
  }

  @Override
  public String authority() {
    return authority;
  }

  @Override
  public <Q, R> ClientCall<Q, R> newCall(MethodDescriptor<Q, R> method, CallOptions options) {
    return new Call<>(method, options);
  }

  /** Close every pooled connection; calls after this fail with UNAVAILABLE. */
  void close() {
    closed = true;
    for (Connection c; (c = idle.pollFirst()) != null; ) {
      c.close();
    }
  }

  /** The outcome of one call. */
  private record Result(Metadata headers, byte[] message, Status status, Metadata trailers) {
    static Result failed(Status status) {
      return new Result(new Metadata(), null, status, new Metadata());
    }
  }

  private final class Call<Q, R> extends ClientCall<Q, R> {
    private final MethodDescriptor<Q, R> method;
    private final CallOptions options;
    private Listener<R> listener;
    private Metadata metadata;
    private byte[] request;
    private boolean done;

    Call(MethodDescriptor<Q, R> method, CallOptions options) {
      this.method = method;
      this.options = options;
    }

    @Override
    public void start(Listener<R> listener, Metadata headers) {
      this.listener = listener;
      this.metadata = headers;
    }

    @Override
    public void request(int numMessages) {}

    @Override
    public void cancel(String message, Throwable cause) {
      // Every call completes inside halfClose() on the caller's thread: nothing is in flight.
    }

    @Override
    public void sendMessage(Q message) {
      if (request != null) {
        finish(Result.failed(Status.INTERNAL.withDescription("one request message per call")));
        return;
      }
      try (InputStream in = method.streamRequest(message)) {
        request = in.readAllBytes();
      } catch (IOException e) {
        finish(Result.failed(Status.INTERNAL.withDescription("cannot serialize: " + e)));
      }
    }

    @Override
    public void halfClose() {
      if (done) {
        return;
      }
      if (method.getType() != MethodDescriptor.MethodType.UNARY || request == null) {
        finish(Result.failed(Status.UNIMPLEMENTED.withDescription(
            "only unary calls with one request go through the direct channel")));
        return;
      }
      finish(exchange(method.getFullMethodName(), metadata, request, options.getDeadline()));
    }

    private void finish(Result result) {
      done = true;
      Executor executor = options.getExecutor() != null ? options.getExecutor() : Runnable::run;
      executor.execute(() -> deliver(result));
    }

    private void deliver(Result result) {
      listener.onHeaders(result.headers());
      Status status = result.status();
      if (status.isOk() && result.message() != null) {
        R response;
        try {
          response = method.parseResponse(new ByteArrayInputStream(result.message()));
        } catch (RuntimeException e) {
          listener.onClose(Status.INTERNAL.withDescription("cannot parse the answer: " + e)
              .withCause(e), result.trailers());
          return;
        }
        listener.onMessage(response);
      }
      listener.onClose(status, result.trailers());
    }
  }

  /** One call on a pooled connection; a stale pooled one is replaced once. */
  private Result exchange(String fullMethod, Metadata metadata, byte[] message, Deadline deadline) {
    if (deadline != null && deadline.isExpired()) {
      return Result.failed(Status.DEADLINE_EXCEEDED.withDescription("deadline passed"));
    }
    for (int attempt = 0; ; attempt++) {
      if (closed) {
        return Result.failed(Status.UNAVAILABLE.withDescription("channel closed"));
      }
      Connection connection = attempt == 0 ? idle.pollFirst() : null;
      boolean pooled = connection != null;
      try {
        if (connection == null) {
          connection = new Connection(deadline);
        }
      } catch (SocketTimeoutException e) {
        return Result.failed(Status.DEADLINE_EXCEEDED.withDescription("connecting timed out"));
      } catch (IOException e) {
        return Result.failed(Status.UNAVAILABLE.withDescription(describe(e)).withCause(e));
      }
      try {
        Result result = connection.call(fullMethod, metadata, message, deadline);
        release(connection);
        return result;
      } catch (Stale e) {
        connection.close();
        if (pooled) {
          continue; // the server closed this idle connection (restarted): a fresh one
        }
        return Result.failed(Status.UNAVAILABLE.withDescription(describe(e.getCause())));
      } catch (SocketTimeoutException e) {
        connection.close();
        return Result.failed(Status.DEADLINE_EXCEEDED.withDescription("deadline passed"));
      } catch (IOException | Http2Exception e) {
        connection.close();
        return Result.failed(Status.UNAVAILABLE.withDescription(describe(e)).withCause(e));
      }
    }
  }

  private void release(Connection connection) {
    if (closed || !connection.reusable() || idle.size() >= MAX_IDLE) {
      connection.close();
      return;
    }
    idle.offerFirst(connection);
    if (closed && idle.remove(connection)) {
      connection.close();
    }
  }

  private static String describe(Throwable e) {
    String message = e.getMessage();
    return message == null || message.isBlank() ? e.getClass().getSimpleName() : message;
  }

  /** The connection failed before the server sent anything for this call. */
  private static final class Stale extends IOException {
    Stale(IOException cause) {
      super(cause);
    }
  }

  /** One HTTP/2 connection, used by one call at a time. */
  private final class Connection {
    private final Socket socket;
    private final InputStream in;
    private final OutputStream out;
    private final DefaultHttp2HeadersDecoder decoder =
        new DefaultHttp2HeadersDecoder(false, MAX_HEADER_LIST_BYTES);
    private int nextStreamId = 1;
    private long sendWindow = DEFAULT_WINDOW;
    private int peerInitialWindow = DEFAULT_WINDOW;
    private int peerMaxFrame = 16_384;
    private long received;
    private boolean goingAway;
    private boolean broken;

    Connection(Deadline deadline) throws IOException {
      IOException failure = null;
      Socket connected = null;
      for (InetAddress address : InetAddress.getAllByName(host)) {
        Socket s = new Socket();
        try {
          s.setTcpNoDelay(true);
          s.connect(new InetSocketAddress(address, port), timeoutMs(deadline));
          connected = s;
          break;
        } catch (IOException e) {
          s.close();
          failure = e;
        }
      }
      if (connected == null) {
        throw failure != null ? failure : new IOException("no address for " + host);
      }
      socket = connected;
      try {
        in = new BufferedInputStream(socket.getInputStream(), 64 * 1024);
        out = new BufferedOutputStream(socket.getOutputStream(), 64 * 1024);
        out.write(PREFACE);
        // SETTINGS: no server push, the largest stream window (answers never wait for updates)
        byte[] settings = new byte[12];
        putSetting(settings, 0, 0x2, 0);
        putSetting(settings, 6, 0x4, MAX_WINDOW);
        frame(SETTINGS, 0, 0, settings, 0, settings.length);
        windowUpdate(0, MAX_WINDOW - DEFAULT_WINDOW);
        out.flush();
      } catch (IOException e) {
        socket.close();
        throw e;
      }
    }

    boolean reusable() {
      return !broken && !goingAway && nextStreamId < LAST_STREAM_ID;
    }

    void close() {
      broken = true;
      try {
        socket.close();
      } catch (IOException ignored) {
        // closing: nothing left to do
      }
    }

    Result call(String fullMethod, Metadata metadata, byte[] message, Deadline deadline)
        throws IOException, Http2Exception {
      int stream = nextStreamId;
      nextStreamId += 2;
      boolean answered = false;
      try {
        frameHeaders(stream, fullMethod, metadata, deadline);
        long streamWindow = peerInitialWindow;
        byte[] body = new byte[5 + message.length];
        body[1] = (byte) (message.length >>> 24);
        body[2] = (byte) (message.length >>> 16);
        body[3] = (byte) (message.length >>> 8);
        body[4] = (byte) message.length;
        System.arraycopy(message, 0, body, 5, message.length);
        int sent = 0;
        Reader reader = new Reader(stream, deadline);
        while (sent < body.length) {
          long window = Math.min(sendWindow, streamWindow);
          if (window <= 0) {
            out.flush();
            answered |= reader.next(); // WINDOW_UPDATE, SETTINGS, or an early answer
            if (reader.finished) {
              broken = true; // answered before the whole request went out: not reused
              return reader.result();
            }
            streamWindow += reader.takeStreamCredit();
            continue;
          }
          int n = (int) Math.min(Math.min(window, peerMaxFrame), body.length - sent);
          boolean last = sent + n == body.length;
          frame(DATA, last ? END_STREAM : 0, stream, body, sent, n);
          sent += n;
          sendWindow -= n;
          streamWindow -= n;
        }
        out.flush();
        while (!reader.finished) {
          answered |= reader.next();
        }
        return reader.result();
      } catch (EOFException | java.net.SocketException e) {
        broken = true;
        if (!answered) {
          throw new Stale(e);
        }
        throw e;
      } catch (IOException | Http2Exception | RuntimeException e) {
        broken = true;
        throw e;
      }
    }

    /** Reads frames for one stream, answering the connection's own frames on the way. */
    private final class Reader {
      private final int stream;
      private final Deadline deadline;
      private final ByteArrayOutputStream data = new ByteArrayOutputStream();
      private Metadata headers;
      private Metadata trailers;
      private Status status;
      private long streamCredit;
      boolean finished;

      Reader(int stream, Deadline deadline) {
        this.stream = stream;
        this.deadline = deadline;
      }

      long takeStreamCredit() {
        long credit = streamCredit;
        streamCredit = 0;
        return credit;
      }

      /** Read one frame; true when it was a frame of this call. */
      boolean next() throws IOException, Http2Exception {
        socket.setSoTimeout(timeoutMs(deadline));
        byte[] head = in.readNBytes(9);
        if (head.length < 9) {
          throw new EOFException("the kgweave server closed the connection");
        }
        int length = ((head[0] & 0xff) << 16) | ((head[1] & 0xff) << 8) | (head[2] & 0xff);
        int type = head[3] & 0xff;
        int flags = head[4] & 0xff;
        int id = ((head[5] & 0x7f) << 24) | ((head[6] & 0xff) << 16) | ((head[7] & 0xff) << 8)
            | (head[8] & 0xff);
        byte[] payload = readFully(length);
        switch (type) {
          case DATA -> {
            received += length;
            if (received > MAX_WINDOW / 2) {
              windowUpdate(0, (int) received);
              out.flush();
              received = 0;
            }
            if (id != stream) {
              return false;
            }
            int from = 0;
            int to = payload.length;
            if ((flags & PADDED) != 0) {
              from = 1;
              to -= payload[0] & 0xff;
            }
            if (data.size() + (to - from) > maxInboundBytes + 5L) {
              status = Status.RESOURCE_EXHAUSTED.withDescription(
                  "the answer is larger than " + maxInboundBytes + " bytes");
              finish(true);
              return true;
            }
            data.write(payload, from, to - from);
            if ((flags & END_STREAM) != 0) {
              finish(false);
            }
            return true;
          }
          case HEADERS -> {
            Http2Headers block = decoder.decodeHeaders(id, Unpooled.wrappedBuffer(
                headerBlock(payload, flags)));
            if (id != stream) {
              return false;
            }
            Metadata md = metadata(block);
            if (headers == null && (flags & END_STREAM) == 0) {
              headers = md;
              CharSequence httpStatus = block.status();
              if (httpStatus != null && !"200".contentEquals(httpStatus)) {
                status = httpStatus(httpStatus.toString());
              }
            } else {
              trailers = md;
              if (headers == null) {
                headers = new Metadata();
              }
              if (status == null) {
                status = grpcStatus(block);
              }
            }
            if ((flags & END_STREAM) != 0) {
              finish(false);
            }
            return true;
          }
          case RST_STREAM -> {
            if (id != stream) {
              return false;
            }
            int code = payload.length >= 4 ? readInt(payload, 0) : 0;
            status = code == 0x7 // REFUSED_STREAM: the server did not process it
                ? Status.UNAVAILABLE.withDescription("the server refused the call")
                : code == 0x8 ? Status.CANCELLED.withDescription("the server cancelled the call")
                : Status.INTERNAL.withDescription("the server reset the call (HTTP/2 error "
                    + code + ")");
            finish(true);
            return true;
          }
          case SETTINGS -> {
            if ((flags & ACK) == 0) {
              for (int i = 0; i + 6 <= payload.length; i += 6) {
                int key = ((payload[i] & 0xff) << 8) | (payload[i + 1] & 0xff);
                int value = readInt(payload, i + 2);
                if (key == 0x4) {
                  streamCredit += (long) value - peerInitialWindow;
                  peerInitialWindow = value;
                } else if (key == 0x5) {
                  peerMaxFrame = value;
                }
              }
              frame(SETTINGS, ACK, 0, new byte[0], 0, 0);
              out.flush();
            }
            return false;
          }
          case PING -> {
            if ((flags & ACK) == 0) {
              frame(PING, ACK, 0, payload, 0, payload.length);
              out.flush();
            }
            return false;
          }
          case GOAWAY -> {
            goingAway = true;
            int last = payload.length >= 4 ? readInt(payload, 0) & 0x7fffffff : 0;
            if (stream > last) {
              // the server did not take this call: safe to send it again on a fresh connection
              throw new Stale(new IOException("the kgweave server is going away"));
            }
            return false;
          }
          case WINDOW_UPDATE -> {
            int increment = payload.length >= 4 ? readInt(payload, 0) & 0x7fffffff : 0;
            if (id == 0) {
              sendWindow += increment;
            } else if (id == stream) {
              streamCredit += increment;
            }
            return false;
          }
          case PUSH_PROMISE -> throw new IOException("the server pushed a stream, not enabled");
          default -> {
            return false;
          }
        }
      }

      private byte[] headerBlock(byte[] payload, int flags) throws IOException {
        int from = 0;
        int to = payload.length;
        if ((flags & PADDED) != 0) {
          from = 1;
          to -= payload[0] & 0xff;
        }
        if ((flags & PRIORITY) != 0) {
          from += 5;
        }
        ByteArrayOutputStream block = new ByteArrayOutputStream();
        block.write(payload, from, to - from);
        while ((flags & END_HEADERS) == 0) {
          byte[] head = in.readNBytes(9);
          if (head.length < 9 || (head[3] & 0xff) != CONTINUATION) {
            throw new IOException("header block not continued");
          }
          int length = ((head[0] & 0xff) << 16) | ((head[1] & 0xff) << 8) | (head[2] & 0xff);
          flags = head[4] & 0xff;
          block.write(readFully(length));
        }
        return block.toByteArray();
      }

      private void finish(boolean reset) {
        finished = true;
        if (reset) {
          // this stream is done on our side whatever the server still sends; the connection is
          // not reused, so nothing of it can reach the next call
          broken = true;
        }
      }

      Result result() {
        Status s = status != null ? status
            : Status.INTERNAL.withDescription("the answer ended without a gRPC status");
        byte[] message = null;
        if (s.isOk()) {
          byte[] bytes = data.toByteArray();
          if (bytes.length < 5) {
            s = Status.INTERNAL.withDescription("the answer has no message");
          } else if (bytes[0] != 0) {
            s = Status.INTERNAL.withDescription("compressed answers are not supported");
          } else {
            int length = readInt(bytes, 1);
            if (length != bytes.length - 5) {
              s = Status.INTERNAL.withDescription("one answer message per unary call");
            } else {
              message = new byte[length];
              System.arraycopy(bytes, 5, message, 0, length);
            }
          }
        }
        return new Result(headers != null ? headers : new Metadata(), message, s,
            trailers != null ? trailers : new Metadata());
      }
    }

    private byte[] readFully(int length) throws IOException {
      byte[] payload = in.readNBytes(length);
      if (payload.length < length) {
        throw new EOFException("the kgweave server closed the connection");
      }
      return payload;
    }

    private void frameHeaders(int stream, String fullMethod, Metadata metadata, Deadline deadline)
        throws IOException {
      ByteArrayOutputStream block = new ByteArrayOutputStream(256);
      literal(block, ":method", "POST");
      literal(block, ":scheme", "http");
      literal(block, ":path", "/" + fullMethod);
      literal(block, ":authority", authority);
      literal(block, "content-type", "application/grpc");
      literal(block, "te", "trailers");
      literal(block, "user-agent", "kgweave-neo4j-plugin");
      if (deadline != null) {
        literal(block, "grpc-timeout", timeout(deadline.timeRemaining(TimeUnit.MICROSECONDS)));
      }
      for (String key : metadata.keys()) {
        if (key.endsWith(Metadata.BINARY_HEADER_SUFFIX)) {
          continue; // the plugin sends no binary metadata
        }
        Iterable<String> values =
            metadata.getAll(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER));
        if (values != null) {
          for (String value : values) {
            literal(block, key, value);
          }
        }
      }
      byte[] bytes = block.toByteArray();
      int sent = 0;
      boolean first = true;
      do {
        int n = Math.min(peerMaxFrame, bytes.length - sent);
        boolean last = sent + n == bytes.length;
        frame(first ? HEADERS : CONTINUATION, last ? END_HEADERS : 0, stream, bytes, sent, n);
        sent += n;
        first = false;
      } while (sent < bytes.length);
    }

    private void frame(int type, int flags, int stream, byte[] payload, int from, int length)
        throws IOException {
      out.write(length >>> 16);
      out.write(length >>> 8);
      out.write(length);
      out.write(type);
      out.write(flags);
      out.write(stream >>> 24);
      out.write(stream >>> 16);
      out.write(stream >>> 8);
      out.write(stream);
      out.write(payload, from, length);
    }

    private void windowUpdate(int stream, int increment) throws IOException {
      byte[] payload = new byte[4];
      putInt(payload, 0, increment);
      frame(WINDOW_UPDATE, 0, stream, payload, 0, 4);
    }
  }

  /** An HPACK literal header field without indexing, new name, no Huffman coding. */
  private static void literal(ByteArrayOutputStream block, String name, String value) {
    block.write(0);
    string(block, name.getBytes(StandardCharsets.US_ASCII));
    string(block, value.getBytes(StandardCharsets.US_ASCII));
  }

  private static void string(ByteArrayOutputStream block, byte[] bytes) {
    int length = bytes.length;
    if (length < 127) {
      block.write(length);
    } else {
      block.write(127);
      length -= 127;
      while (length >= 128) {
        block.write((length & 0x7f) | 0x80);
        length >>>= 7;
      }
      block.write(length);
    }
    block.write(bytes, 0, bytes.length);
  }

  /** grpc-timeout: at most 8 digits and a unit. */
  static String timeout(long micros) {
    long value = Math.max(micros, 1);
    if (value < 100_000_000L) {
      return value + "u";
    }
    value /= 1000;
    if (value < 100_000_000L) {
      return value + "m";
    }
    value /= 1000;
    return Math.min(value, 99_999_999L) + "S";
  }

  private static int timeoutMs(Deadline deadline) {
    if (deadline == null) {
      return 0;
    }
    long ms = deadline.timeRemaining(TimeUnit.MILLISECONDS);
    return (int) Math.max(1, Math.min(ms, Integer.MAX_VALUE));
  }

  private static Metadata metadata(Http2Headers block) {
    Metadata md = new Metadata();
    for (Map.Entry<CharSequence, CharSequence> e : block) {
      String key = e.getKey().toString();
      if (key.startsWith(":") || key.endsWith(Metadata.BINARY_HEADER_SUFFIX)) {
        continue;
      }
      md.put(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER), e.getValue().toString());
    }
    return md;
  }

  private static Status grpcStatus(Http2Headers block) {
    CharSequence code = block.get("grpc-status");
    if (code == null) {
      CharSequence http = block.status();
      return http != null && !"200".contentEquals(http)
          ? httpStatus(http.toString())
          : Status.INTERNAL.withDescription("the answer has no grpc-status");
    }
    Status status;
    try {
      status = Status.fromCodeValue(Integer.parseInt(code.toString().trim()));
    } catch (NumberFormatException e) {
      return Status.INTERNAL.withDescription("bad grpc-status '" + code + "'");
    }
    CharSequence message = block.get("grpc-message");
    if (message != null && message.length() > 0) {
      String text = message.toString();
      try {
        text = URLDecoder.decode(text.replace("+", "%2B"), StandardCharsets.UTF_8);
      } catch (IllegalArgumentException e) {
        // keep the raw text
      }
      status = status.withDescription(text);
    }
    return status;
  }

  /** grpc-java's mapping of an HTTP status that is not 200. */
  private static Status httpStatus(String http) {
    Status.Code code = switch (http) {
      case "400", "431" -> Status.Code.INTERNAL;
      case "401" -> Status.Code.UNAUTHENTICATED;
      case "403" -> Status.Code.PERMISSION_DENIED;
      case "404" -> Status.Code.UNIMPLEMENTED;
      case "429", "502", "503", "504" -> Status.Code.UNAVAILABLE;
      default -> Status.Code.UNKNOWN;
    };
    return Status.fromCode(code).withDescription("HTTP status " + http);
  }

  private static void putSetting(byte[] to, int at, int key, int value) {
    to[at] = (byte) (key >>> 8);
    to[at + 1] = (byte) key;
    putInt(to, at + 2, value);
  }

  private static void putInt(byte[] to, int at, int value) {
    to[at] = (byte) (value >>> 24);
    to[at + 1] = (byte) (value >>> 16);
    to[at + 2] = (byte) (value >>> 8);
    to[at + 3] = (byte) value;
  }

  private static int readInt(byte[] from, int at) {
    return ((from[at] & 0xff) << 24) | ((from[at + 1] & 0xff) << 16)
        | ((from[at + 2] & 0xff) << 8) | (from[at + 3] & 0xff);
  }
}

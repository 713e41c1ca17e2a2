package io.kgweave.neo4j;

import io.grpc.Status.Code;
import io.grpc.StatusRuntimeException;
import org.neo4j.kernel.api.exceptions.Status;

/**
 * A failed kgweave call or a bad argument, as one readable line ({@code kgweave: CODE: message}).
 * It carries a Neo4j status, so Neo4j shows the message as it is instead of wrapping it in
 * "Failed to invoke procedure ... Caused by: java.lang.RuntimeException".
 */
public final class KgweaveException extends RuntimeException implements Status.HasStatus {
  private static final long serialVersionUID = 1L;

  private final transient Status status;

  private KgweaveException(String message, Status status) {
    super(message, null, false, false);
    this.status = status;
  }

  /** A bad argument detected in the plugin, before any call. */
  public static KgweaveException invalidArgument(String message) {
    return new KgweaveException(
        "kgweave: INVALID_ARGUMENT: " + message, Status.Statement.ArgumentError);
  }

  /** A gRPC failure: the server's code and message. */
  public static KgweaveException fromGrpc(StatusRuntimeException e, String address, long deadlineMs) {
    io.grpc.Status grpc = e.getStatus();
    Code code = grpc.getCode();
    String detail = grpc.getDescription() == null ? "" : grpc.getDescription();
    String message;
    switch (code) {
      case UNAVAILABLE:
        message = "no kgweave server answers at " + address
            + (detail.isEmpty() ? "" : " (" + firstLine(detail) + ")")
            + "; start one with `kgweave serve` or set kgweave.address in kgweave.conf";
        break;
      case DEADLINE_EXCEEDED:
        message = "no answer from the kgweave server at " + address + " within " + deadlineMs
            + " ms (kgweave.deadline_ms)";
        break;
      default:
        message = detail.isEmpty() ? code.name().toLowerCase(java.util.Locale.ROOT) : detail;
    }
    Status status;
    switch (code) {
      case INVALID_ARGUMENT:
      case NOT_FOUND:
      case OUT_OF_RANGE:
        status = Status.Statement.ArgumentError;
        break;
      case UNAUTHENTICATED:
      case PERMISSION_DENIED:
        status = Status.Security.Forbidden;
        break;
      default:
        status = Status.Procedure.ProcedureCallFailed;
    }
    return new KgweaveException("kgweave: " + code.name() + ": " + firstLine(message), status);
  }

  private static String firstLine(String text) {
    int newline = text.indexOf('\n');
    return newline < 0 ? text : text.substring(0, newline);
  }

  @Override
  public Status status() {
    return status;
  }
}

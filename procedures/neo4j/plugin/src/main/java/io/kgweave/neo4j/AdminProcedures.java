package io.kgweave.neo4j;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import io.kgweave.v1.ActivateModelRequest;
import io.kgweave.v1.ActivationPolicy;
import io.kgweave.v1.AdminServiceGrpc;
import io.kgweave.v1.GetJobRequest;
import io.kgweave.v1.Job;
import io.kgweave.v1.ListModelsRequest;
import io.kgweave.v1.ModelInfo;
import io.kgweave.v1.StartTrainingRequest;
import io.kgweave.v1.TrainingSettings;
import io.kgweave.v1.TuningSettings;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Stream;
import org.neo4j.graphdb.Transaction;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.procedure.Admin;
import org.neo4j.procedure.Context;
import org.neo4j.procedure.Description;
import org.neo4j.procedure.Mode;
import org.neo4j.procedure.Name;
import org.neo4j.procedure.Procedure;

/** Training jobs and model versions; Neo4j admin users only ({@code @Admin}). */
public class AdminProcedures {
  @Context public GraphDatabaseAPI db;
  @Context public Transaction tx;

  private static final List<String> TRAIN_KEYS = List.of("dataset", "activation", "tuning");

  /**
   * A training job's state (a search's: trials as epochs, the best validation MRR so far; a
   * joint training's language model: its throughput in rate, rateUnit "tokens/s").
   */
  public record JobRow(
      String jobId, String state, String phase, long epoch, long epochs, double loss,
      double validMrr, double etaSeconds, String version, boolean activated, String message,
      double rate, String rateUnit) {
    static JobRow of(Job job) {
      return new JobRow(job.getJobId(),
          job.getState().name().replace("JOB_STATE_", "").toLowerCase(Locale.ROOT),
          job.getPhase(), job.getEpoch(), job.getEpochs(), job.getLoss(), job.getValidMrr(),
          job.getEtaS(), job.getModelVersion().isEmpty() ? null : job.getModelVersion(),
          job.getActivated(), job.getMessage(), job.getRate(),
          job.getRateUnit().isEmpty() ? null : job.getRateUnit());
    }
  }

  /** A registered model version. */
  public record ModelRow(
      String version, String model, long dim, long entities, long relations, boolean active,
      String createdAt, String source, Map<String, Object> validMetrics,
      Map<String, Object> testMetrics) {
    static ModelRow of(ModelInfo m) {
      return new ModelRow(m.getVersion(), m.getModel(), m.getDim(), m.getNumEntities(),
          m.getNumRelations(), m.getActive(), m.getCreatedAt(), m.getSource(),
          Map.<String, Object>copyOf(m.getValidMetricsMap()),
          Map.<String, Object>copyOf(m.getTestMetricsMap()));
    }
  }

  @Admin
  @Procedure(name = "kgweave.admin.train", mode = Mode.DBMS)
  @Description("kgweave.admin.train(config = {}) - start a training job on the kgweave server "
      + "and return it at once (queued). config: any TrainingSettings field (model, dim, epochs, "
      + "batchSize, lr, optimizer, regime, joint, timeBudgetS, ...; snake_case works too), "
      + "dataset (empty: a snapshot of the graph), activation ('if_better', 'always', 'never') "
      + "and tuning: a map of TuningSettings fields (budgetS, trials, trialBudgetS, "
      + "searchModels, pruner, study) that makes the job a hyperparameter search (kgweave tune) "
      + "around the settings given, counting trials as epochs. Admin only.")
  public Stream<JobRow> train(
      @Name(value = "config", defaultValue = "{}") Map<String, Object> config) {
    StartTrainingRequest.Builder request = StartTrainingRequest.newBuilder();
    TrainingSettings.Builder settings = request.getSettingsBuilder();
    for (Map.Entry<String, Object> entry : (config == null ? Map.<String, Object>of() : config)
        .entrySet()) {
      String key = entry.getKey();
      Object value = entry.getValue();
      if (value == null) {
        continue;
      }
      switch (key) {
        case "dataset" -> {
          if (!(value instanceof String dataset)) {
            throw KgweaveException.invalidArgument("dataset must be a string");
          }
          request.setDataset(dataset);
        }
        case "activation" -> request.setActivation(activation(value));
        case "tuning" -> tuning(request.getTuningBuilder(), value);
        default -> setField(settings, "training setting", key, value, TRAIN_KEYS);
      }
    }
    return Stream.of(JobRow.of(admin(stub -> stub.startTraining(request.build()))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.job", mode = Mode.DBMS)
  @Description("kgweave.admin.job(jobId) - a training job's state: phase, epoch, loss, validation "
      + "MRR, ETA, and the model version it registered. Admin only.")
  public Stream<JobRow> job(@Name("jobId") String jobId) {
    GetJobRequest request =
        GetJobRequest.newBuilder().setJobId(Graph.required(jobId, "jobId")).build();
    return Stream.of(JobRow.of(admin(stub -> stub.getJob(request))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.activate", mode = Mode.DBMS)
  @Description("kgweave.admin.activate(version) - serve this registered model version from now "
      + "on (calls in flight finish on the version they started on). Admin only.")
  public Stream<ModelRow> activate(@Name("version") String version) {
    ActivateModelRequest request =
        ActivateModelRequest.newBuilder().setVersion(Graph.required(version, "version")).build();
    return Stream.of(ModelRow.of(admin(stub -> stub.activateModel(request))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.models", mode = Mode.DBMS)
  @Description("kgweave.admin.models() - every registered model version, newest first, with its "
      + "metrics; active marks the one being served. Admin only.")
  public Stream<ModelRow> models() {
    return admin(stub -> stub.listModels(ListModelsRequest.getDefaultInstance()))
        .getModelsList().stream().map(ModelRow::of);
  }

  /** One AdminService call to the server this database talks to. */
  private <T> T admin(Function<AdminServiceGrpc.AdminServiceBlockingStub, T> call) {
    return new Graph(db, tx).client().admin(call);
  }

  /** config.tuning: a map of TuningSettings fields. */
  private static void tuning(TuningSettings.Builder tuning, Object value) {
    if (!(value instanceof Map<?, ?> map)) {
      throw KgweaveException.invalidArgument(
          "tuning must be a map of tuning settings ({trials: 20, budgetS: 600, ...}), not "
              + Graph.describe(value));
    }
    for (Map.Entry<?, ?> entry : map.entrySet()) {
      if (entry.getValue() != null) {
        setField(tuning, "tuning setting", entry.getKey().toString(), entry.getValue(), List.of());
      }
    }
  }

  private static ActivationPolicy activation(Object value) {
    if (value instanceof String text) {
      switch (text.toLowerCase(Locale.ROOT)) {
        case "if_better":
          return ActivationPolicy.ACTIVATION_POLICY_IF_BETTER;
        case "always":
          return ActivationPolicy.ACTIVATION_POLICY_ALWAYS;
        case "never":
          return ActivationPolicy.ACTIVATION_POLICY_NEVER;
        default:
          break;
      }
    }
    throw KgweaveException.invalidArgument(
        "activation must be 'if_better', 'always' or 'never', not " + Graph.describe(value));
  }

  /**
   * One field of a settings message (TrainingSettings, TuningSettings) by its proto name
   * (snake_case) or JSON name (camelCase); {@code what} names it in errors, whose list of known
   * keys starts with {@code otherKeys}.
   */
  private static void setField(
      Message.Builder settings, String what, String key, Object value, List<String> otherKeys) {
    FieldDescriptor field = null;
    List<String> names = new ArrayList<>(otherKeys);
    for (FieldDescriptor f : settings.getDescriptorForType().getFields()) {
      if (f.getName().equals(key) || f.getJsonName().equals(key)) {
        field = f;
      }
      names.add(f.getJsonName());
    }
    if (field == null) {
      throw KgweaveException.invalidArgument(
          "unknown " + what + " '" + key + "' (known: " + String.join(", ", names) + ")");
    }
    String problem = key + " must be ";
    switch (field.getJavaType()) {
      case INT -> settings.setField(field, (int) Graph.integer(value, key, 0, Integer.MAX_VALUE));
      case DOUBLE -> settings.setField(field, Graph.number(value, key));
      case BOOLEAN -> {
        if (!(value instanceof Boolean flag)) {
          throw KgweaveException.invalidArgument(
              problem + "true or false, not " + Graph.describe(value));
        }
        settings.setField(field, flag);
      }
      case STRING -> {
        if (!(value instanceof String text)) {
          throw KgweaveException.invalidArgument(
              problem + "a string, not " + Graph.describe(value));
        }
        settings.setField(field, text);
      }
      default ->
          throw KgweaveException.invalidArgument(what + " " + key + " is not supported here");
    }
  }
}

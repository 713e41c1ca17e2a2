package io.kgweave.neo4j;

import com.google.protobuf.Descriptors.FieldDescriptor;
import io.kgweave.v1.ActivateModelRequest;
import io.kgweave.v1.ActivationPolicy;
import io.kgweave.v1.GetJobRequest;
import io.kgweave.v1.Job;
import io.kgweave.v1.ListModelsRequest;
import io.kgweave.v1.ModelInfo;
import io.kgweave.v1.StartTrainingRequest;
import io.kgweave.v1.TrainingSettings;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
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

  /** A training job's state. */
  public static class JobRow {
    public String jobId;
    public String state;
    public String phase;
    public long epoch;
    public long epochs;
    public double loss;
    public double validMrr;
    public double etaSeconds;
    public String version;
    public boolean activated;
    public String message;

    JobRow(Job job) {
      this.jobId = job.getJobId();
      this.state = job.getState().name().replace("JOB_STATE_", "").toLowerCase(Locale.ROOT);
      this.phase = job.getPhase();
      this.epoch = job.getEpoch();
      this.epochs = job.getEpochs();
      this.loss = job.getLoss();
      this.validMrr = job.getValidMrr();
      this.etaSeconds = job.getEtaS();
      this.version = job.getModelVersion().isEmpty() ? null : job.getModelVersion();
      this.activated = job.getActivated();
      this.message = job.getMessage();
    }
  }

  /** A registered model version. */
  public static class ModelRow {
    public String version;
    public String model;
    public long dim;
    public long entities;
    public long relations;
    public boolean active;
    public String createdAt;
    public String source;
    public Map<String, Object> validMetrics;
    public Map<String, Object> testMetrics;

    ModelRow(ModelInfo m) {
      this.version = m.getVersion();
      this.model = m.getModel();
      this.dim = m.getDim();
      this.entities = m.getNumEntities();
      this.relations = m.getNumRelations();
      this.active = m.getActive();
      this.createdAt = m.getCreatedAt();
      this.source = m.getSource();
      this.validMetrics = new HashMap<String, Object>(m.getValidMetricsMap());
      this.testMetrics = new HashMap<String, Object>(m.getTestMetricsMap());
    }
  }

  @Admin
  @Procedure(name = "kgweave.admin.train", mode = Mode.DBMS)
  @Description("kgweave.admin.train(config = {}) - start a training job on the kgweave server "
      + "and return it at once (queued). config: any TrainingSettings field (model, dim, epochs, "
      + "batchSize, lr, optimizer, regime, joint, timeBudgetS, ...; snake_case works too), "
      + "dataset (empty: a snapshot of the graph) and activation ('if_better', 'always', "
      + "'never'). Admin only.")
  public Stream<JobRow> train(
      @Name(value = "config", defaultValue = "{}") Map<String, Object> config) {
    StartTrainingRequest.Builder request = StartTrainingRequest.newBuilder();
    TrainingSettings.Builder settings = TrainingSettings.newBuilder();
    for (Map.Entry<String, Object> entry : (config == null ? Map.<String, Object>of() : config)
        .entrySet()) {
      String key = entry.getKey();
      Object value = entry.getValue();
      if (value == null) {
        continue;
      }
      if (key.equals("dataset")) {
        if (!(value instanceof String dataset)) {
          throw KgweaveException.invalidArgument("dataset must be a string");
        }
        request.setDataset(dataset);
      } else if (key.equals("activation")) {
        request.setActivation(activation(value));
      } else {
        setField(settings, key, value);
      }
    }
    request.setSettings(settings);
    Graph graph = new Graph(db, tx);
    return Stream.of(new JobRow(graph.client().admin(stub -> stub.startTraining(request.build()))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.job", mode = Mode.DBMS)
  @Description("kgweave.admin.job(jobId) - a training job's state: phase, epoch, loss, validation "
      + "MRR, ETA, and the model version it registered. Admin only.")
  public Stream<JobRow> job(@Name("jobId") String jobId) {
    if (jobId == null || jobId.isBlank()) {
      throw KgweaveException.invalidArgument("jobId is empty");
    }
    GetJobRequest request = GetJobRequest.newBuilder().setJobId(jobId).build();
    Graph graph = new Graph(db, tx);
    return Stream.of(new JobRow(graph.client().admin(stub -> stub.getJob(request))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.activate", mode = Mode.DBMS)
  @Description("kgweave.admin.activate(version) - serve this registered model version from now "
      + "on (calls in flight finish on the version they started on). Admin only.")
  public Stream<ModelRow> activate(@Name("version") String version) {
    if (version == null || version.isBlank()) {
      throw KgweaveException.invalidArgument("version is empty");
    }
    ActivateModelRequest request = ActivateModelRequest.newBuilder().setVersion(version).build();
    Graph graph = new Graph(db, tx);
    return Stream.of(new ModelRow(graph.client().admin(stub -> stub.activateModel(request))));
  }

  @Admin
  @Procedure(name = "kgweave.admin.models", mode = Mode.DBMS)
  @Description("kgweave.admin.models() - every registered model version, newest first, with its "
      + "metrics; active marks the one being served. Admin only.")
  public Stream<ModelRow> models() {
    Graph graph = new Graph(db, tx);
    List<ModelRow> rows = new ArrayList<>();
    for (ModelInfo m : graph.client()
        .admin(stub -> stub.listModels(ListModelsRequest.getDefaultInstance()))
        .getModelsList()) {
      rows.add(new ModelRow(m));
    }
    return rows.stream();
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

  /** One TrainingSettings field by its proto name (snake_case) or JSON name (camelCase). */
  private static void setField(TrainingSettings.Builder settings, String key, Object value) {
    FieldDescriptor field = null;
    for (FieldDescriptor f : TrainingSettings.getDescriptor().getFields()) {
      if (f.getName().equals(key) || f.getJsonName().equals(key)) {
        field = f;
      }
    }
    if (field == null) {
      List<String> names = new ArrayList<>(List.of("dataset", "activation"));
      for (FieldDescriptor f : TrainingSettings.getDescriptor().getFields()) {
        names.add(f.getJsonName());
      }
      throw KgweaveException.invalidArgument(
          "unknown training setting '" + key + "' (known: " + String.join(", ", names) + ")");
    }
    String problem = key + " must be ";
    switch (field.getJavaType()) {
      case INT:
        settings.setField(field, (int) Graph.integer(value, key, 0, Integer.MAX_VALUE));
        return;
      case DOUBLE:
        if (!(value instanceof Number number)) {
          throw KgweaveException.invalidArgument(problem + "a number, not " + Graph.describe(value));
        }
        settings.setField(field, number.doubleValue());
        return;
      case BOOLEAN:
        if (!(value instanceof Boolean flag)) {
          throw KgweaveException.invalidArgument(problem + "true or false, not " + Graph.describe(value));
        }
        settings.setField(field, flag);
        return;
      case STRING:
        if (!(value instanceof String text)) {
          throw KgweaveException.invalidArgument(problem + "a string, not " + Graph.describe(value));
        }
        settings.setField(field, text);
        return;
      default:
        throw KgweaveException.invalidArgument("training setting " + key + " is not supported here");
    }
  }
}

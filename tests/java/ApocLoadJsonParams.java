// The HTTP request apoc.load.jsonParams(url, headers, payload) sends, made the way APOC Core's
// apoc.util.Util makes it (openUrlConnection, writePayload): java.net.HttpURLConnection, the
// "method" entry of the headers map used as the request method AND sent as a header, chunked
// streaming mode, every map entry a request property, the payload written as UTF-8.
// Run: java ApocLoadJsonParams.java URL PAYLOAD [HEADER=VALUE ...]
// Prints the status code on the first line, then the response body (or the error body).
import java.io.BufferedWriter;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;

public class ApocLoadJsonParams {
    public static void main(String[] args) throws Exception {
        Map<String, Object> headers = new LinkedHashMap<>();
        for (int i = 2; i < args.length; i++) {
            String[] pair = args[i].split("=", 2);
            headers.put(pair[0], pair[1]);
        }
        HttpURLConnection con = (HttpURLConnection) new URL(args[0]).openConnection();
        con.setRequestProperty("User-Agent", "APOC Procedures for Neo4j");
        Object method = headers.get("method");
        if (method != null) {
            con.setRequestMethod(method.toString());
            con.setChunkedStreamingMode(1024 * 1024);
            con.setInstanceFollowRedirects(true);
        }
        headers.forEach((k, v) -> con.setRequestProperty(k, v == null ? "" : v.toString()));
        con.setConnectTimeout(10_000);
        con.setReadTimeout(60_000);
        con.setDoOutput(true);
        try (BufferedWriter writer = new BufferedWriter(
                new OutputStreamWriter(con.getOutputStream(), StandardCharsets.UTF_8))) {
            writer.write(args[1]);
        }
        int code = con.getResponseCode();
        InputStream body = code < 400 ? con.getInputStream() : con.getErrorStream();
        System.out.println(code);
        if (body != null) {
            System.out.println(new String(body.readAllBytes(), StandardCharsets.UTF_8));
        }
    }
}

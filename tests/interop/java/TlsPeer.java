// A TLS 1.3 client and server built on Java's JSSE, for tlskit's interop tests (tests/interop/test_java.py).
//
//   java TlsPeer client            jobs on stdin, one a line: space-separated key=value (see Job);
//                                  one JSON line on stdout per connection
//   java TlsPeer server KEY=VALUE  echoes each connection until EOF; one JSON line on stdout per connection
//
// Certificates and keys are PEM files (keys PKCS#8), loaded into in-memory key stores. Named groups are the
// JVM-wide system property jdk.tls.namedGroups (JDK 17 has no per-connection setting). A connection is
// reported as resumed when its session is older than the connection: JSSE copies the creation time of the
// session it resumes into the new one.

import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import javax.net.ssl.ExtendedSSLSession;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SNIServerName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;

public final class TlsPeer {
    private static final int TIMEOUT_MS = 10_000;

    public static void main(String[] args) throws Exception {
        if (args.length >= 1 && args[0].equals("client")) {
            runClientJobs();
        } else if (args.length >= 1 && args[0].equals("server")) {
            runServer(parse(String.join(" ", List.of(args).subList(1, args.length))));
        } else {
            System.err.println("usage: TlsPeer client < jobs | TlsPeer server port=N cert=PEM key=PEM ...");
            System.exit(2);
        }
    }

    // ------------------------------------------------------------------------------------------ client

    /** One line of client jobs: id= port= ca= [host=127.0.0.1] [sni=localhost] [suites=A,B] [alpn=a,b]
     *  [connections=1 (more: the same SSLContext, so later ones may resume)] [cert= key=]
     *  [send=text [repeat=N]]: send N lines of text and read as much back. */
    private static void runClientJobs() throws Exception {
        String text = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
        for (String line : text.split("\n")) {
            if (line.isBlank()) {
                continue;
            }
            Map<String, String> job = parse(line);
            SSLContext context = null;
            int connections = Integer.parseInt(job.getOrDefault("connections", "1"));
            for (int n = 1; n <= connections; n++) {
                Map<String, Object> result = new LinkedHashMap<>();
                result.put("id", job.get("id"));
                result.put("connection", n);
                try {
                    if (context == null) {
                        context = context(job);
                    }
                    runClient(context, job, result);
                } catch (Exception e) {
                    result.put("error", describe(e));
                }
                System.out.println(json(result));
                System.out.flush();
            }
        }
    }

    private static void runClient(SSLContext context, Map<String, String> job, Map<String, Object> result)
            throws IOException {
        String host = job.getOrDefault("host", "127.0.0.1");
        String sni = job.getOrDefault("sni", "localhost");
        int port = Integer.parseInt(job.get("port"));
        long started = System.currentTimeMillis();
        try (Socket plain = new Socket()) {
            plain.connect(new InetSocketAddress(host, port), TIMEOUT_MS);
            plain.setSoTimeout(TIMEOUT_MS);
            // The host given here is the name verified (endpoint identification) and sent as SNI.
            try (SSLSocket tls = (SSLSocket) context.getSocketFactory().createSocket(plain, sni, port, true)) {
                SSLParameters params = parameters(tls.getSSLParameters(), job);
                params.setEndpointIdentificationAlgorithm("HTTPS");
                params.setServerNames(List.<SNIServerName>of(new SNIHostName(sni)));
                tls.setSSLParameters(params);
                tls.startHandshake();
                report(tls, started, result);
                String send = job.get("send");
                if (send != null) {
                    String data = (send + "\n").repeat(Integer.parseInt(job.getOrDefault("repeat", "1")));
                    result.put("echo", exchange(tls, data.getBytes(StandardCharsets.UTF_8)));
                }
            }
        }
    }

    /** Send ``data`` and read until as many bytes came back (the server echoes). */
    private static String exchange(SSLSocket tls, byte[] data) throws IOException {
        OutputStream out = tls.getOutputStream();
        out.write(data);
        out.flush();
        InputStream in = tls.getInputStream();
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] buffer = new byte[4096];
        while (got.size() < data.length) {
            int count = in.read(buffer);
            if (count < 0) {
                break;
            }
            got.write(buffer, 0, count);
        }
        return got.toString(StandardCharsets.UTF_8);
    }

    // ------------------------------------------------------------------------------------------ server

    /** port= cert= key= [suites=] [alpn=] [client-auth=need|want ca=]: accept until killed, a thread each. */
    private static void runServer(Map<String, String> options) throws Exception {
        SSLContext context = context(options);
        AtomicInteger counter = new AtomicInteger();
        try (ServerSocket listener = new ServerSocket()) {
            listener.setReuseAddress(true);
            listener.bind(new InetSocketAddress("127.0.0.1", Integer.parseInt(options.get("port"))));
            System.out.println("{\"listening\":" + listener.getLocalPort() + "}");
            System.out.flush();
            while (true) {
                Socket plain = listener.accept();
                int n = counter.incrementAndGet();
                Thread thread = new Thread(() -> serve(context, options, plain, n));
                thread.setDaemon(true);
                thread.start();
            }
        }
    }

    private static void serve(SSLContext context, Map<String, String> options, Socket plain, int n) {
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("connection", n);
        long started = System.currentTimeMillis();
        try (Socket closing = plain;
             SSLSocket tls = (SSLSocket) context.getSocketFactory().createSocket(plain, null, plain.getPort(),
                                                                                 true)) {
            plain.setSoTimeout(TIMEOUT_MS);
            tls.setUseClientMode(false);
            SSLParameters params = parameters(tls.getSSLParameters(), options);
            String clientAuth = options.getOrDefault("client-auth", "none");
            params.setNeedClientAuth(clientAuth.equals("need"));
            if (clientAuth.equals("want")) {
                params.setWantClientAuth(true);
            }
            tls.setSSLParameters(params);
            tls.startHandshake();
            report(tls, started, result);
            List<String> sni = new ArrayList<>();
            for (SNIServerName name : ((ExtendedSSLSession) tls.getSession()).getRequestedServerNames()) {
                sni.add(name instanceof SNIHostName ? ((SNIHostName) name).getAsciiName() : name.toString());
            }
            result.put("sni", sni.isEmpty() ? null : sni.get(0));
            // Report before echoing: the test may read the report while its client is still connected.
            synchronized (System.out) {
                System.out.println(json(result));
                System.out.flush();
            }
            echo(tls, n);
        } catch (Exception e) {
            result.put("error", describe(e));
            synchronized (System.out) {
                System.out.println(json(result));
                System.out.flush();
            }
        }
    }

    /** Echo until the client closes; a failure here goes to stderr, the connection's report is out already. */
    private static void echo(SSLSocket tls, int n) {
        try {
            InputStream in = tls.getInputStream();
            OutputStream out = tls.getOutputStream();
            byte[] buffer = new byte[4096];
            int count;
            while ((count = in.read(buffer)) >= 0) {
                out.write(buffer, 0, count);
                out.flush();
            }
        } catch (IOException e) {
            System.err.println("connection " + n + " after the handshake: " + e);
        }
    }

    // ------------------------------------------------------------------------------------------ shared

    /** TLSv1.3 only, with the job's suites and ALPN protocols if given. */
    private static SSLParameters parameters(SSLParameters params, Map<String, String> options) {
        params.setProtocols(new String[] {"TLSv1.3"});
        if (options.containsKey("suites")) {
            params.setCipherSuites(options.get("suites").split(","));
        }
        if (options.containsKey("alpn")) {
            params.setApplicationProtocols(options.get("alpn").split(","));
        }
        return params;
    }

    /** What was negotiated: protocol, suite, the peer's certificate subject, ALPN, whether resumed. */
    private static void report(SSLSocket tls, long started, Map<String, Object> result) {
        SSLSession session = tls.getSession();
        result.put("protocol", session.getProtocol());
        result.put("suite", session.getCipherSuite());
        String peer = null;
        try {
            Certificate[] chain = session.getPeerCertificates();
            peer = ((X509Certificate) chain[0]).getSubjectX500Principal().getName();
        } catch (IOException e) {
            // SSLPeerUnverifiedException: no peer certificate (a server without client auth)
        }
        result.put("peer", peer);
        String alpn = tls.getApplicationProtocol();
        result.put("alpn", alpn == null || alpn.isEmpty() ? null : alpn);
        result.put("resumed", session.getCreationTime() < started);
    }

    /** An SSLContext trusting ca= (if given) and presenting cert= with key= (if given). */
    private static SSLContext context(Map<String, String> options) throws Exception {
        TrustManager[] trust = null;
        if (options.containsKey("ca")) {
            KeyStore roots = KeyStore.getInstance("PKCS12");
            roots.load(null, null);
            int i = 0;
            for (Certificate cert : readCertificates(options.get("ca"))) {
                roots.setCertificateEntry("ca" + i++, cert);
            }
            TrustManagerFactory factory = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            factory.init(roots);
            trust = factory.getTrustManagers();
        }
        KeyManager[] keys = null;
        if (options.containsKey("cert")) {
            char[] password = "unused".toCharArray();
            KeyStore identity = KeyStore.getInstance("PKCS12");
            identity.load(null, null);
            Certificate[] chain = readCertificates(options.get("cert")).toArray(new Certificate[0]);
            identity.setKeyEntry("identity", readKey(options.get("key")), password, chain);
            KeyManagerFactory factory = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            factory.init(identity, password);
            keys = factory.getKeyManagers();
        }
        SSLContext context = SSLContext.getInstance("TLSv1.3");
        context.init(keys, trust, null);
        return context;
    }

    private static Collection<? extends Certificate> readCertificates(String path) throws Exception {
        try (InputStream in = new FileInputStream(path)) {
            return CertificateFactory.getInstance("X.509").generateCertificates(in);
        }
    }

    /** A PKCS#8 PEM private key of any algorithm JSSE signs with. */
    private static PrivateKey readKey(String path) throws Exception {
        String pem = Files.readString(Path.of(path));
        String body = pem.replaceAll("-----(BEGIN|END) PRIVATE KEY-----", "").replaceAll("\\s", "");
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(body));
        Exception last = null;
        for (String algorithm : new String[] {"EC", "RSA", "RSASSA-PSS", "Ed25519"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(spec);
            } catch (Exception e) {
                last = e;
            }
        }
        throw new IllegalArgumentException("no key factory reads " + path, last);
    }

    private static Map<String, String> describe(Exception e) {
        Map<String, String> error = new LinkedHashMap<>();
        error.put("type", e.getClass().getName());
        error.put("message", String.valueOf(e.getMessage()));
        return error;
    }

    private static Map<String, String> parse(String line) {
        Map<String, String> options = new HashMap<>();
        for (String token : line.trim().split("\\s+")) {
            int eq = token.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected key=value, got " + token);
            }
            options.put(token.substring(0, eq), token.substring(eq + 1));
        }
        return options;
    }

    private static String json(Object value) {
        if (value == null) {
            return "null";
        }
        if (value instanceof Boolean || value instanceof Number) {
            return value.toString();
        }
        if (value instanceof Map) {
            StringBuilder out = new StringBuilder("{");
            for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(json(entry.getKey().toString())).append(':').append(json(entry.getValue()));
            }
            return out.append('}').toString();
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : value.toString().toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}

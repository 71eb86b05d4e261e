// The development stack's Apache Solr: Solr's own embedded Jetty runner on 127.0.0.1,
// serving the cores of a Solr home (scripts/solr.sh). Run as a single-file program:
//   java -cp 'LIB/*' DevSolr.java SOLR_HOME PORT
import java.nio.file.Path;
import org.apache.solr.embedded.JettyConfig;
import org.apache.solr.embedded.JettySolrRunner;

public class DevSolr {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        JettyConfig config =
                JettyConfig.builder().setPort(port).setContext("/solr").stopAtShutdown(true).build();
        JettySolrRunner solr = new JettySolrRunner(home.toString(), config);
        solr.start();
        System.out.println("DevSolr: " + solr.getBaseUrl() + " serving " + home);
        Thread.currentThread().join();
    }
}

import Testing

@testable import webpubsub_cli

@Suite("webpubsub CLI: redaction")
struct RedactionTests {
    @Test(arguments: [
        ("ws://h/client/hubs/x?access_token=eyJabc.def.ghi&x=1", "ws://h/client/hubs/x?access_token=<redacted>&x=1"),
        ("recover ?awps_connection_id=c&awps_reconnection_token=SECRET", "recover ?awps_connection_id=c&awps_reconnection_token=<redacted>"),
        ("Endpoint=http://h;AccessKey=SECRETKEY;Version=1.0;", "Endpoint=http://h;AccessKey=<redacted>;Version=1.0;"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln in text", "token <redacted> in text"),
        ("nothing secret here", "nothing secret here"),
    ])
    func secretsAreRedacted(_ input: String, _ expected: String) {
        #expect(Redaction.redact(input) == expected)
    }
}

import Foundation

/// A throwaway PKI made with the `openssl` command in a temporary folder, once per test process:
/// a trusted root, server certificates signed by it (valid for localhost + 127.0.0.1, valid for
/// another name only, expired), and a server certificate signed by an untrusted root.
public struct TestCA: Sendable {
    public let dir: URL
    public var rootCert: String { dir.appendingPathComponent("root.pem").path }
    public func cert(_ name: String) -> String { dir.appendingPathComponent("\(name).crt").path }
    public func key(_ name: String) -> String { dir.appendingPathComponent("\(name).key").path }

    public static let shared: Result<TestCA, TestCAError> = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ws-test-ca-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            return .failure(TestCAError(output: "\(error)"))
        }
        let script = #"""
            set -e
            cd "$1"
            cat > ca.cnf <<'EOF'
            [ ca ]
            default_ca = CA_default
            [ CA_default ]
            dir = .
            database = index.txt
            new_certs_dir = .
            serial = serial
            default_md = sha256
            policy = policy_any
            copy_extensions = copy
            unique_subject = no
            [ policy_any ]
            commonName = supplied
            [ req ]
            distinguished_name = dn
            prompt = no
            [ dn ]
            CN = test
            [ v3_ca ]
            basicConstraints = critical,CA:TRUE
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            EOF
            : > index.txt
            echo 1000 > serial
            mkroot() {
              openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" \
                -out "$1.pem" -days 2 -subj "/CN=$1" -config ca.cnf -extensions v3_ca 2>/dev/null
            }
            # leaf NAME SAN CA [startdate enddate]
            leaf() {
              openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" \
                -out "$1.csr" -subj "/CN=$1" -addext "subjectAltName=$2" \
                -addext "basicConstraints=CA:FALSE" -addext "extendedKeyUsage=serverAuth" 2>/dev/null
              if [ -n "$4" ]; then dates="-startdate $4 -enddate $5"; else dates="-days 2"; fi
              openssl ca -batch -config ca.cnf -cert "$3.pem" -keyfile "$3.key" -in "$1.csr" -out "$1.crt" \
                -notext $dates 2>/dev/null
            }
            mkroot root
            mkroot rogue
            leaf good "DNS:localhost,IP:127.0.0.1,IP:::1" root
            leaf othername "DNS:other.example" root
            leaf expired "DNS:localhost,IP:127.0.0.1" root 20200101000000Z 20200102000000Z
            leaf untrusted "DNS:localhost,IP:127.0.0.1" rogue
            """#
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script, "sh", dir.path]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do {
            try p.run()
        } catch {
            return .failure(TestCAError(output: "\(error)"))
        }
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        // Remove the folder when the test process exits (a closure without captures is a C function).
        atexit {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("ws-test-ca-\(getpid())")
            try? FileManager.default.removeItem(at: path)
        }
        guard p.terminationStatus == 0 else {
            return .failure(TestCAError(output: String(decoding: out, as: UTF8.self)))
        }
        return .success(TestCA(dir: dir))
    }()
}

public struct TestCAError: Error, CustomStringConvertible {
    public var output: String
    public var description: String { "making the test CA failed: \(output)" }
}

import Foundation
import Testing
import TestSupport

@Test func peerProcessRunsPython() throws {
    let p = try PeerProcess.python("hello.py")
    #expect(try p.value(after: "HELLO ") == "42")
    #expect(p.waitForExit(timeout: 10) == 0)
}

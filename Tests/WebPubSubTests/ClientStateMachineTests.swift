import Foundation
import Testing
import WebSocket

@testable import WebPubSub

//===----------------------------------------------------------------------===//
// The client's state machine alone: no socket, no queue, no clock, no sleep.
// Time is a number the test chooses; every assertion is on the returned actions.
//===----------------------------------------------------------------------===//

/// Seconds on the test's clock.
private func at(_ seconds: Double) -> Instant { Instant(nanoseconds: 1_000_000_000_000).adding(seconds) }

private let baseURL = URL(string: "ws://svc/client/hubs/h?access_token=T")!

private func report(_ code: UInt16, _ reason: String = "") -> WebSocketCloseReport {
    WebSocketCloseReport(code: WebSocketCloseCode(rawValue: code), reason: reason, wasClean: code != 1006)
}

private func connectedMessage(_ id: String = "c1", token: String? = "tok") -> DownstreamMessage {
    .connected(connectionID: id, userID: "u", reconnectionToken: token)
}

private func message(_ seq: UInt64?, _ text: String = "m") -> DownstreamMessage {
    .groupMessage(group: "g", fromUserID: nil, content: .text(text), sequenceID: seq)
}

extension [ClientAction] {
    var writes: [String] { compactMap { if case .write(let f, _) = $0 { return f } else { return nil } } }
    var events: [ClientEvent] { compactMap { if case .emit(let e) = $0 { return e } else { return nil } } }
    var credentialFetches: [UInt64] { compactMap { if case .fetchCredential(let a) = $0 { return a } else { return nil } } }
    var socketOpens: [(id: UInt64, url: URL)] { compactMap { if case .openSocket(let id, let url, _) = $0 { return (id, url) } else { return nil } } }
    var operationResults: [UInt64: Result<WebPubSubResult, WebPubSubError>] {
        var out: [UInt64: Result<WebPubSubResult, WebPubSubError>] = [:]
        for case .completeOperation(let token, let r) in self { out[token] = r }
        return out
    }
    var warnings: [String] { compactMap { if case .log(.warning, let m, _) = $0 { return m } else { return nil } } }
    var aborts: Int { filter { $0 == .abortSocket }.count }
    var stopped: Bool { events.contains(.stopped) }
}

/// A machine and the bookkeeping a test needs to drive it like the shell does.
private struct Driver {
    var m: ClientStateMachine
    var now = at(0)
    var attempt: UInt64 = 0
    var socket: UInt64 = 0
    /// Every action so far.
    var log: [ClientAction] = []

    init(_ configure: (inout WebPubSubClientOptions) -> Void = { _ in }) {
        var o = WebPubSubClientOptions()
        o.keepAliveInterval = nil
        configure(&o)
        m = ClientStateMachine(options: o, seed: 7)
    }

    @discardableResult
    mutating func take(_ actions: [ClientAction]) -> [ClientAction] {
        log += actions
        if let a = actions.credentialFetches.last { attempt = a }
        if let s = actions.socketOpens.last { socket = s.id }
        return actions
    }

    /// Runs the timer up to `t`, one deadline after the other (as the shell's one timer does).
    @discardableResult
    mutating func advance(to t: Instant) -> [ClientAction] {
        var out: [ClientAction] = []
        while let d = m.nextDeadline(), d <= t {
            now = max(now, d)
            out += take(m.timerFired(now: now))
        }
        now = max(now, t)
        return out
    }

    @discardableResult
    mutating func advance(by seconds: Double) -> [ClientAction] { advance(to: now.adding(seconds)) }

    /// The machine's next deadline (far away when there is none).
    mutating func deadline() -> Instant { m.nextDeadline() ?? Instant(nanoseconds: .max) }

    @discardableResult
    mutating func open() -> [ClientAction] { take(m.openRequested(token: 100, now: now)) }

    @discardableResult
    mutating func credential(_ url: URL = baseURL) -> [ClientAction] {
        take(m.credentialReturned(attempt: attempt, .success(url), now: now))
    }

    @discardableResult
    mutating func socketOpens() -> [ClientAction] { take(m.socketOpened(id: socket, now: now)) }

    @discardableResult
    mutating func receive(_ msg: DownstreamMessage) -> [ClientAction] { take(m.received(msg, socket: socket, now: now)) }

    @discardableResult
    mutating func close(_ code: UInt16, _ reason: String = "") -> [ClientAction] {
        take(m.socketClosed(id: socket, report(code, reason), now: now))
    }

    /// Open → credential → socket → `connected`.
    @discardableResult
    mutating func connect(_ id: String = "c1") -> [ClientAction] {
        var out = open()
        out += credential()
        out += socketOpens()
        out += receive(connectedMessage(id))
        return out
    }

    /// After a loss: the credential (if asked for), the socket and `connected`, as the service would.
    @discardableResult
    mutating func reconnectNow(_ id: String) -> [ClientAction] {
        var out = credential()
        out += socketOpens()
        out += receive(connectedMessage(id))
        return out
    }

    @discardableResult
    mutating func submit(_ r: OperationRequest, token: UInt64, ackID: UInt64? = nil, fireAndForget: Bool = false,
                         timeout: TimeInterval? = nil) -> [ClientAction] {
        take(m.submit(r, token: token, ackID: ackID, fireAndForget: fireAndForget, timeout: timeout, now: now))
    }
}

@Suite("Client state machine")
struct ClientStateMachineTests {
    // MARK: Opening

    @Test func openFetchesTheCredentialThenConnectsAndReports() throws {
        var d = Driver()
        #expect(d.open().credentialFetches == [1])
        #expect(d.m.state == .connecting)
        let opens = d.credential().socketOpens
        #expect(opens.count == 1 && opens[0].url == baseURL)
        #expect(d.socketOpens().events.isEmpty)  // waits for `connected`
        let ready = d.receive(connectedMessage())
        #expect(ready.contains(.completeOpen(token: 100, .success(()))))
        #expect(ready.events == [.connected(ConnectedEvent(connectionID: "c1", userID: "u"))])
        #expect(d.m.isConnected && d.m.session?.connectionID == "c1")
    }

    @Test func theFirstOpenIsNotRetriedAndKeepsTheCause() {
        var d = Driver()
        d.open()
        d.credential()
        var rejected = WebSocketCloseReport(code: .init(rawValue: 1006), wasClean: false)
        rejected.error = nil
        let a = d.take(d.m.socketClosed(id: d.socket, rejected, now: d.now))
        #expect(a.contains(.completeOpen(token: 100, .failure(WebPubSubError(.openFailed, message: "")))))
        #expect(d.m.state == .stopped && a.credentialFetches.isEmpty)
    }

    @Test func aCredentialThatNeverReturnsIsBoundedByTheStartTimeout() {
        var d = Driver { $0.startTimeout = 5 }
        d.open()
        #expect(d.advance(by: 4.9).isEmpty)
        let a = d.advance(by: 0.2)
        #expect(a.contains(.completeOpen(token: 100, .failure(WebPubSubError(.openFailed, message: "")))))
        // Its late answer is ignored.
        #expect(d.credential().isEmpty)
    }

    @Test func aCredentialErrorFailsOpenWithTheUnderlyingError() throws {
        struct Boom: Error {}
        var d = Driver()
        d.open()
        let a = d.take(d.m.credentialReturned(attempt: d.attempt, .failure(Boom()), now: d.now))
        guard case .completeOpen(_, .failure(let e))? = a.first(where: { if case .completeOpen = $0 { return true } else { return false } }) else {
            Issue.record("no open completion")
            return
        }
        #expect(e.code == .openFailed && e.underlyingError is Boom)
    }

    // MARK: Recover or reconnect

    @Test(arguments: [
        // reliable, canResume, code, autoReconnect, expected
        (true, true, UInt16(1006), true, ProtocolRules.LossDecision.recover),
        (true, true, 1011, true, .recover),
        (true, true, 1000, false, .recover),
        (true, true, 1008, true, .reconnect),
        (true, true, 1008, false, .stop),
        (true, false, 1006, true, .reconnect),
        (true, false, 1006, false, .stop),
        (false, true, 1006, true, .reconnect),
        (false, true, 1011, false, .stop),
    ])
    func lossDecisionTable(reliable: Bool, canResume: Bool, code: UInt16, autoReconnect: Bool, expected: ProtocolRules.LossDecision) {
        #expect(ProtocolRules.afterLoss(reliable: reliable, canResume: canResume, closeCode: code, autoReconnect: autoReconnect) == expected)
    }

    @Test(arguments: [UInt16(1006), 1011, 1001, 1000])
    func aReliableDropIsRecoveredOnTheSameConnection(code: UInt16) throws {
        var d = Driver()
        d.connect()
        let lost = d.close(code, "bye")
        #expect(lost.events == [.recovering(RecoveringEvent(connectionID: "c1", closeCode: code, closeReason: "bye"))])
        let open = try #require(lost.socketOpens.first)
        #expect(open.url.absoluteString == "ws://svc/client/hubs/h?access_token=T&awps_connection_id=c1&awps_reconnection_token=tok")
        #expect(lost.credentialFetches.isEmpty && d.m.state == .recovering)
        let back = d.socketOpens()
        #expect(back.events == [.recovered(RecoveredEvent(connectionID: "c1"))])
        // The service may confirm the same connection again: that is no second `connected`.
        #expect(d.receive(connectedMessage("c1", token: "tok2")).warnings.isEmpty)
        #expect(d.m.session?.reconnectionToken == "tok2")
        #expect(d.m.isConnected)
    }

    @Test func theRecoveryWindowEdge() {
        var d = Driver { $0.recoveryTimeout = 10; $0.recoveryRetryInterval = 1; $0.backoffResetInterval = 0 }
        d.connect()
        d.close(1006)
        var attempts = 1
        // Each attempt fails at once; attempts go on, one a second, until the window ends.
        while d.m.state == .recovering {
            let a = d.close(1006) + d.advance(by: 1)
            attempts += a.socketOpens.count
            if a.events.contains(where: { if case .disconnected = $0 { return true } else { return false } }) { break }
        }
        #expect(attempts >= 9 && attempts <= 11)
        #expect(d.log.events.contains(.disconnected(DisconnectedEvent(connectionID: "c1", message: nil, closeCode: 1006, closeReason: ""))))
        #expect(d.m.state == .connecting)  // the stable connection's first reconnect is immediate
    }

    @Test(arguments: [false, true])
    func a1008DuringRecoveryEndsItAtOnce(afterTheUpgrade: Bool) {
        var d = Driver { $0.backoffResetInterval = 0 }
        d.connect()
        d.close(1006)
        // The service refuses the session: before the upgrade, or (as it does) accepting it and then closing 1008.
        if afterTheUpgrade { d.socketOpens() }
        let a = d.close(1008, "session gone")
        #expect(a.events.contains(.disconnected(DisconnectedEvent(connectionID: "c1", message: nil, closeCode: 1008, closeReason: "session gone"))))
        #expect(a.credentialFetches.count == 1 && a.socketOpens.isEmpty)
        #expect(d.m.state == .connecting)
    }

    @Test func thePlainProtocolReconnectsAndRejoins() throws {
        var d = Driver { $0.protocolType = .json; $0.backoffResetInterval = 0 }
        d.connect()
        d.submit(.joinGroup("g1"), token: 1)
        d.receive(.ack(ackID: 1, success: true, error: nil))
        #expect(d.m.joinedGroups == ["g1"])
        let lost = d.close(1006)
        #expect(lost.events == [.disconnected(DisconnectedEvent(connectionID: "c1", message: nil, closeCode: 1006, closeReason: ""))])
        #expect(lost.credentialFetches.count == 1)
        let back = d.reconnectNow("c2")
        #expect(back.writes.contains(#"{"type":"joinGroup","group":"g1","ackId":2}"#))
        #expect(back.events.contains(.connected(ConnectedEvent(connectionID: "c2", userID: "u"))))
    }

    // MARK: Pacing

    /// A server that accepts and closes every connection right after `connected`.
    @Test(arguments: [UInt16(1008), 1011])
    func aFlappingServerIsPacedByTheBackoff(code: UInt16) {
        var d = Driver()
        d.connect()
        var sockets = 1
        var credentials = 1
        while d.now < at(10) {
            let a = d.close(code)
            if d.m.state == .stopped { break }
            // Run time forward to the next attempt, then let it succeed and be killed again.
            var next = a
            while next.socketOpens.isEmpty && next.credentialFetches.isEmpty {
                guard let deadline = d.m.nextDeadline() else { break }
                next = d.advance(to: deadline)
            }
            credentials += next.credentialFetches.count
            if !next.credentialFetches.isEmpty { d.credential() }
            sockets += 1
            d.socketOpens()
            if case .connecting = d.m.lifecycle { d.receive(connectedMessage("c\(sockets)")) }
        }
        #expect(sockets <= 12, "\(sockets) sockets in 10 s")
        #expect(credentials <= 12)
        #expect(!d.m.lifecycle.isStopped)
    }

    @Test func backoffGrowsThenResetsAfterAStableConnection() throws {
        var d = Driver { $0.protocolType = .json; $0.backoffResetInterval = 30 }
        d.connect()
        var delays: [Double] = []
        for i in 0..<6 {
            d.close(1006)
            let start = d.now
            var a: [ClientAction] = []
            while a.credentialFetches.isEmpty { a = d.advance(to: d.deadline()) }
            delays.append(d.now.seconds(since: start))
            d.reconnectNow("c\(i)")
        }
        #expect(delays.first! > 0.6 && delays.first! <= 0.8)
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $0 < $1 || $1 >= 30 * 0.8 })
        // Up for 30 s: the next loss reconnects at once.
        d.advance(by: 31)
        #expect(d.close(1006).credentialFetches.count == 1)
    }

    @Test func unlimitedByDefaultAndAFinitePolicyStops() throws {
        var d = Driver()
        d.connect()
        d.close(1008)
        for _ in 0..<200 {
            d.advance(to: d.deadline())
            d.take(d.m.socketClosed(id: d.socket, report(1006), now: d.now))  // no-op if no socket yet
            if case .connecting(_, nil, _) = d.m.lifecycle {
                d.take(d.m.credentialReturned(attempt: d.attempt, .failure(WebPubSubError(.openFailed, message: "")), now: d.now))
            }
        }
        #expect(!d.log.stopped)
        if case .waitingToReconnect(let until) = d.m.lifecycle { #expect(until.seconds(since: d.now) <= 30) }

        var f = Driver { $0.reconnectRetryPolicy = RetryPolicy(maxRetries: 2, delay: 0.1) }
        f.connect()
        f.close(1008)
        for _ in 0..<10 {
            guard let next = f.m.nextDeadline() else { break }
            f.advance(to: next)
            if case .connecting(_, nil, _) = f.m.lifecycle {
                f.take(f.m.credentialReturned(attempt: f.attempt, .failure(WebPubSubError(.openFailed, message: "")), now: f.now))
            }
        }
        #expect(f.log.stopped && f.m.state == .stopped)
    }

    // MARK: Operations

    @Test func ackedSendCompletesOnItsAck() {
        var d = Driver()
        d.connect()
        let a = d.submit(.sendToGroup("g", .text("hi"), noEcho: false), token: 1)
        #expect(a.writes == [#"{"type":"sendToGroup","group":"g","ackId":1,"dataType":"text","data":"hi","noEcho":false}"#])
        let done = d.receive(.ack(ackID: 1, success: true, error: nil))
        #expect(done.operationResults[1] == .success(WebPubSubResult(ackID: 1, isDuplicated: false)))
        #expect(d.m.ledger.count == 0)
    }

    @Test func duplicateIsSuccessAndForbiddenIsNotRetried() throws {
        var d = Driver()
        d.connect()
        d.submit(.joinGroup("g"), token: 1)
        let dup = d.receive(.ack(ackID: 1, success: false, error: ServiceErrorDetail(name: "Duplicate", message: "")))
        #expect(dup.operationResults[1] == .success(WebPubSubResult(ackID: 1, isDuplicated: true)))
        d.submit(.joinGroup("h"), token: 2)
        let no = d.receive(.ack(ackID: 2, success: false, error: ServiceErrorDetail(name: "Forbidden", message: "no")))
        let e = try #require(no.operationResults[2]).failure
        #expect(e?.code == .serviceError && e?.errorName == "Forbidden" && e?.ackID == 2 && e?.isTransient == false)
        #expect(no.writes.isEmpty)
    }

    @Test func transientErrorsAndAckTimeoutsRetryWithTheSameAckID() throws {
        var d = Driver { $0.ackTimeout = 5; $0.messageRetryPolicy = RetryPolicy(maxRetries: 2, delay: 1, mode: .fixed) }
        d.connect()
        let first = d.submit(.sendEvent("e", .text("x")), token: 1).writes
        d.receive(.ack(ackID: 1, success: false, error: ServiceErrorDetail(name: "InternalServerError", message: "")))
        let retry = d.advance(by: 1).writes
        #expect(retry == first)
        // No ack at all: the ack time-out, then the last retry, then failure with the ack id.
        #expect(d.advance(by: 6.5).writes == first)
        let failed = d.advance(by: 10)
        let e = try #require(failed.operationResults[1]?.failure)
        #expect(e.code == .ackTimeout && e.ackID == 1)
    }

    @Test func aResendAfterALostConnectionCountsAgainstTheRetryPolicy() throws {
        var d = Driver { $0.messageRetryPolicy = RetryPolicy(maxRetries: 2, delay: 0.1, mode: .fixed); $0.backoffResetInterval = 0 }
        d.connect()
        let frame = d.submit(.sendToGroup("g", .text("poison"), noEcho: false), token: 1).writes
        var resent = 0
        var result: Result<WebPubSubResult, WebPubSubError>?
        for _ in 0..<5 where result == nil {
            let a = d.close(1011) + d.socketOpens()
            resent += a.writes.filter { frame.contains($0) }.count
            result = a.operationResults[1]
        }
        #expect(resent == 2)
        #expect(try #require(result).failure?.code == .connectionLost)
    }

    @Test func anOversizeMessageFailsAtOnceAndTouchesNothing() throws {
        var d = Driver()
        d.connect()
        let big = String(repeating: "x", count: 2 << 20)
        let a = d.submit(.sendToGroup("g", .text(big), noEcho: false), token: 1)
        let e = try #require(a.operationResults[1]?.failure)
        #expect(e.code == .messageTooLarge && !e.isTransient && e.ackID == 1)
        #expect(a.writes.isEmpty && a.aborts == 0 && d.m.isConnected)
        // Just under the limit is sent.
        var small = Driver { $0.maximumOutgoingMessageSize = 200 }
        small.connect()
        #expect(small.submit(.sendToGroup("g", .text(String(repeating: "y", count: 100)), noEcho: false), token: 2).writes.count == 1)
        #expect(small.submit(.sendToGroup("g", .text(String(repeating: "y", count: 200)), noEcho: false), token: 3).operationResults[3]?.failure?.code == .messageTooLarge)
    }

    @Test func invalidArgumentsSendNothing() {
        var d = Driver()
        d.connect()
        #expect(d.submit(.joinGroup(""), token: 1).operationResults[1]?.failure?.code == .invalidArgument)
        #expect(d.submit(.joinGroup(String(repeating: "g", count: 1025)), token: 2).operationResults[2]?.failure?.code == .invalidArgument)
        #expect(d.submit(.sendToGroup("g", .json("{nope"), noEcho: false), token: 3).operationResults[3]?.failure?.code == .invalidContent)
        #expect(d.submit(.sendEvent("", .text("x")), token: 4).operationResults[4]?.failure?.code == .invalidArgument)
        #expect(d.submit(.sendToGroup("g", .text("x"), noEcho: false), token: 5, ackID: 9, fireAndForget: true).operationResults[5]?.failure?.code == .invalidArgument)
        d.submit(.joinGroup("a"), token: 6, ackID: 42)
        #expect(d.submit(.joinGroup("b"), token: 7, ackID: 42).operationResults[7]?.failure?.code == .ackIDInUse)
        #expect(d.log.writes.count == 1)
    }

    @Test func fireAndForgetCompletesOnceWrittenAndRetriesARefusedWrite() throws {
        var d = Driver()
        d.connect()
        let a = d.submit(.sendToGroup("g", .text("f"), noEcho: false), token: 1, fireAndForget: true)
        guard case .write(_, let serial?)? = a.first(where: { if case .write = $0 { return true } else { return false } }) else {
            Issue.record("no write with a serial")
            return
        }
        #expect(a.operationResults.isEmpty)
        #expect(d.take(d.m.writeFinished(serial: serial, accepted: true, now: d.now)).operationResults[1] == .success(WebPubSubResult(ackID: nil, isDuplicated: false)))
        d.submit(.sendToGroup("g", .text("f2"), noEcho: false), token: 2, fireAndForget: true)
        let refused = d.take(d.m.writeFinished(serial: serial + 1, accepted: false, now: d.now))
        #expect(refused.operationResults.isEmpty)  // waits out the retry delay
        #expect(d.advance(by: 1).writes.count == 1)
    }

    @Test func operationsWaitForTheConnectionAndCancellationSendsNothing() {
        var d = Driver()
        d.open()
        d.submit(.sendToGroup("g", .text("early"), noEcho: false), token: 1)
        d.submit(.sendToGroup("g", .text("cancelled"), noEcho: false), token: 2)
        let c = d.take(d.m.cancelOperation(token: 2, now: d.now))
        #expect(c.operationResults[2]?.failure?.code == .cancelled)
        d.credential()
        d.socketOpens()
        let ready = d.receive(connectedMessage())
        #expect(ready.writes.count == 1 && ready.writes[0].contains("early"))
    }

    @Test func anOperationDeadlineFailsItWithTimedOut() throws {
        var d = Driver()
        d.connect()
        d.submit(.joinGroup("g"), token: 1, timeout: 2)
        let a = d.advance(by: 2.5)
        #expect(try #require(a.operationResults[1]).failure?.code == .timedOut)
        #expect(d.receive(.ack(ackID: 1, success: true, error: nil)).operationResults.isEmpty)  // no late completion
    }

    // MARK: Receiving

    @Test func aSecondConnectedOnALiveConnectionIsIgnored() {
        var d = Driver()
        d.connect()
        let a = d.receive(connectedMessage("intruder", token: "evil"))
        #expect(a.warnings.count == 1 && a.events.isEmpty)
        #expect(d.m.session?.connectionID == "c1" && d.m.session?.reconnectionToken == "tok")
        // The next drop is still a recovery of c1.
        #expect(d.close(1006).socketOpens.first?.url.absoluteString.contains("awps_connection_id=c1") == true)
    }

    @Test func aPoisonedSequenceIDNeitherMutesNorIsAcked() {
        var d = Driver()
        d.connect()
        #expect(d.receive(message(1)).events.count == 1)
        let poison = d.receive(message(UInt64.max))
        #expect(poison.events == [.recovering(RecoveringEvent(connectionID: "c1", closeCode: 1006, closeReason: ""))])
        #expect(poison.aborts == 1 && poison.warnings.count == 1)
        d.socketOpens()
        // Later messages are delivered, and no ack ever names the poisoned id.
        #expect(d.receive(message(2)).events.count == 1)
        d.advance(by: 2)
        #expect(d.log.writes.contains(#"{"type":"sequenceAck","sequenceId":2}"#))
        #expect(!d.log.writes.contains { $0.contains("18446744073709551615") })
    }

    @Test func duplicatesAreDroppedAndAcksAreQuickPastThreeHundred() {
        var d = Driver()
        d.connect()
        d.receive(message(1))
        #expect(d.receive(message(1)).events.isEmpty)
        var quick: [String] = []
        for i in 2...302 { quick += d.receive(message(UInt64(i))).writes }
        #expect(quick == [#"{"type":"sequenceAck","sequenceId":301}"#])
    }

    // MARK: Timers: only what is needed

    @Test func anIdleClientHasNoSequenceAckDeadline() throws {
        var d = Driver { $0.keepAliveInterval = 20; $0.keepAliveTimeout = 120 }
        d.connect()
        let idle = d.deadline()
        #expect(idle.seconds(since: d.now) == 20)  // the keepalive ping, not a 1 s tick
        d.receive(message(1))
        #expect(d.deadline().seconds(since: d.now) == 1)
        #expect(d.advance(by: 1).writes == [#"{"type":"sequenceAck","sequenceId":1}"#])
        #expect(d.deadline().seconds(since: d.now) > 18)
    }

    @Test func keepaliveDropsASilentConnectionUnlessReadingIsPaused() {
        var d = Driver { $0.keepAliveInterval = 1; $0.keepAliveTimeout = 3 }
        d.connect()
        d.m.pauseReadingRequested()
        #expect(d.advance(by: 10).aborts == 0)
        d.m.readingResumed(now: d.now)
        let a = d.advance(by: 3.5)
        #expect(a.writes.contains(#"{"type":"ping"}"#))
        #expect(a.aborts == 1 && a.events.contains(.recovering(RecoveringEvent(connectionID: "c1", closeCode: 1006, closeReason: ""))))
    }

    // MARK: Close in every state

    enum Stage: String, CaseIterable, Sendable {
        case credential, socket, awaitingConnected, connected, recoveringWait, recoveringSocket, waitingToReconnect, stopping
    }

    @Test(arguments: Stage.allCases)
    func closeFinishesFromEveryState(stage: Stage) {
        var d = Driver { $0.backoffResetInterval = 0 }
        switch stage {
        case .credential: d.open()
        case .socket: d.open(); d.credential()
        case .awaitingConnected: d.open(); d.credential(); d.socketOpens()
        case .connected: d.connect()
        case .recoveringSocket: d.connect(); d.close(1006)
        case .recoveringWait:
            d.connect()
            d.close(1006)
            d.close(1006)
        case .waitingToReconnect:
            d.connect()
            d.close(1008)
            d.close(1008)
        case .stopping: d.connect(); d.take(d.m.closeRequested(token: 1, now: d.now))
        }
        var a = d.take(d.m.closeRequested(token: 2, now: d.now))
        if case .stopping = d.m.lifecycle {
            #expect(a.contains(.closeSocket) || stage == .stopping)
            a += d.advance(by: ClientStateMachine.closeGuard + 1)
        }
        #expect(a.contains(.completeClose(token: 2)))
        #expect(d.log.contains(.completeClose(token: 2)) && d.m.state == .stopped)
        #expect(d.log.events.filter { $0 == .stopped }.count <= 1)
        // Whatever comes late is ignored.
        #expect(d.close(1006).isEmpty && d.credential().isEmpty)
    }

    @Test func closeReportsDisconnectedWithTheCloseCode() {
        var d = Driver()
        d.connect()
        d.take(d.m.closeRequested(token: 1, now: d.now))
        let a = d.close(1000)
        #expect(a.events == [.disconnected(DisconnectedEvent(connectionID: "c1", message: nil, closeCode: 1000, closeReason: "")), .stopped])
        #expect(a.contains(.completeClose(token: 1)))
    }
}

extension ClientStateMachine.Lifecycle {
    var isStopped: Bool { self == .stopped }
}

extension Result {
    var failure: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}

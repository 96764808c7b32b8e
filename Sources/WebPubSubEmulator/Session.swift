import Foundation
import NIOCore
import NIOWebSocket

/// The client protocol of a connection.
public enum ClientProtocolKind: String, Sendable {
    /// A plain WebSocket client (no or unknown subprotocol).
    case raw
    /// `json.webpubsub.azure.v1`.
    case json = "json.webpubsub.azure.v1"
    /// `json.reliable.webpubsub.azure.v1`.
    case reliable = "json.reliable.webpubsub.azure.v1"

    /// Chooses the first requested subprotocol the emulator speaks, else `.raw`.
    static func negotiate(_ requested: [String]) -> ClientProtocolKind {
        for p in requested {
            if let k = ClientProtocolKind(rawValue: p), k != .raw { return k }
        }
        return .raw
    }
}

/// One logical client connection (it outlives its socket while a reliable session waits for recovery).
///
/// `@unchecked Sendable`: every mutable field is read and written only while holding `ServiceState.lock`.
final class Session: @unchecked Sendable {
    let id: String
    let hub: String
    let hubKey: String
    let kind: ClientProtocolKind
    let userID: String?
    var permissions: PermissionSet
    var groups: Set<String> = []
    var acks: AckMemory
    /// Ack ids of `event` requests whose upstream call has not answered yet.
    var eventsInFlight: Set<UInt64> = []
    var reliable: ReliableBuffer<ByteBuffer>?
    /// The current socket; nil while a reliable session waits for recovery.
    var channel: (any Channel)?
    var paused = false
    var held: [SocketOp] = []
    var expiry: Scheduled<Void>?
    var ended = false
    /// Test hooks: fail the next N acked requests with InternalServerError; swallow the next N acks; delay acks.
    var failAcks = 0
    var dropAcks = 0
    var ackDelayMilliseconds = 0
    /// CloudEvents `ce-id` counter (`connect` = 0, `connected` = 1, then +1 per event).
    var cloudEventCounter = 1
    var connectionState: String?
    var rawSendGroup: String?
    var claims: [String: [String]]
    let connectedAt = Date()

    init(id: String, hub: String, kind: ClientProtocolKind, userID: String?, roles: [String],
         claims: [String: [String]], ackCapacity: Int, reliableLimits: ReliableBuffer<Int>.Limits) {
        self.id = id
        self.hub = hub
        self.hubKey = hub.lowercased()
        self.kind = kind
        self.userID = userID
        self.permissions = PermissionSet(roles: roles)
        self.claims = claims
        self.acks = AckMemory(capacity: ackCapacity)
        if kind == .reliable {
            reliable = ReliableBuffer(limits: .init(maxMessages: reliableLimits.maxMessages, maxBytes: reliableLimits.maxBytes))
        }
    }
}

/// The connections, groups and users of one hub (guarded by `ServiceState.lock`).
struct HubState {
    var connections: [String: Session] = [:]
    var groups: [String: [String: Session]] = [:]
    var users: [String: [String: Session]] = [:]
}

import Foundation

/// The argument of ``CallbackType/connected``: a new connection is ready (not sent after a recovery).
public struct ConnectedEvent: Sendable, Hashable {
    /// The id the service gave the connection.
    public var connectionID: String
    /// The user id of the client access token, if it had one.
    public var userID: String?
}

/// The argument of ``CallbackType/disconnected``: the connection is gone and was not recovered.
public struct DisconnectedEvent: Sendable, Hashable {
    /// The id of the connection that was lost, if it had got one.
    public var connectionID: String?
    /// The `message` of the service's last `disconnected` message on that connection, if any.
    public var message: String?
    /// The close code of the socket that ended the connection (1006 when it was lost without a
    /// close frame; 1000 after `close()`), when a socket had opened.
    public var closeCode: UInt16?
    /// The close reason the peer sent with ``closeCode``, if any.
    public var closeReason: String?
}

/// The argument of ``CallbackType/recovering``: the socket of a reliable connection was lost and the
/// client is recovering the same connection (nothing is lost; ``CallbackType/connected`` will not fire).
public struct RecoveringEvent: Sendable, Hashable {
    /// The id of the connection being recovered.
    public var connectionID: String
    /// The close code of the lost socket (1006 when lost without a close frame).
    public var closeCode: UInt16
    /// The close reason, if the peer sent one.
    public var closeReason: String
}

/// The argument of ``CallbackType/recovered``: the connection is back on a new socket, same id.
public struct RecoveredEvent: Sendable, Hashable {
    /// The id of the recovered connection.
    public var connectionID: String
}

/// The argument of ``CallbackType/stopped``: the client stopped (closed, or gave up reconnecting).
public struct StoppedEvent: Sendable, Hashable {}

/// The argument of ``CallbackType/serverMessage``: a message from the server (REST or an event handler).
public struct ServerMessageEvent: Sendable, Hashable {
    /// The content.
    public var content: MessageContent
    /// The sequence id on the reliable protocol.
    public var sequenceID: UInt64?
}

/// The argument of ``CallbackType/groupMessage``: a message published to a group this connection is in.
public struct GroupMessageEvent: Sendable, Hashable {
    /// The group.
    public var group: String
    /// The user id of the publisher, when the service sent one.
    public var fromUserID: String?
    /// The content.
    public var content: MessageContent
    /// The sequence id on the reliable protocol.
    public var sequenceID: UInt64?
}

/// The argument of ``CallbackType/rejoinGroupFailed``: rejoining a group after a reconnect failed.
public struct RejoinGroupFailedEvent: Sendable, Hashable {
    /// The group.
    public var group: String
    /// Why.
    public var error: WebPubSubError
}

/// The event kinds, without their argument types.
enum CallbackKind: Int, Sendable, Hashable, CaseIterable {
    case connected, disconnected, stopped, serverMessage, groupMessage, rejoinGroupFailed, recovering, recovered
}

/// A kind of client event; its type parameter is the type of the handler's argument, so
/// `client.subscribe(.groupMessage) { event in … }` hands `event` as a ``GroupMessageEvent``.
public struct CallbackType<Event: Sendable>: Sendable, Hashable {
    let kind: CallbackKind
    private init(_ kind: CallbackKind) { self.kind = kind }

    static func make(_ kind: CallbackKind) -> CallbackType<Event> { CallbackType(kind) }
}

extension CallbackType where Event == ConnectedEvent {
    /// A new connection is ready (after `open()` and after every reconnect; not after a recovery).
    public static var connected: Self { .make(.connected) }
}

extension CallbackType where Event == DisconnectedEvent {
    /// The connection is gone for good (after the recovery window, a 1008, or `close()`).
    public static var disconnected: Self { .make(.disconnected) }
}

extension CallbackType where Event == StoppedEvent {
    /// The client stopped: closed, or it gave up reconnecting.
    public static var stopped: Self { .make(.stopped) }
}

extension CallbackType where Event == ServerMessageEvent {
    /// A message from the server.
    public static var serverMessage: Self { .make(.serverMessage) }
}

extension CallbackType where Event == GroupMessageEvent {
    /// A message to a group this client is in.
    public static var groupMessage: Self { .make(.groupMessage) }
}

extension CallbackType where Event == RejoinGroupFailedEvent {
    /// Rejoining a group on a new connection failed.
    public static var rejoinGroupFailed: Self { .make(.rejoinGroupFailed) }
}

extension CallbackType where Event == RecoveringEvent {
    /// The reliable connection's socket was lost; the client is recovering the same connection.
    public static var recovering: Self { .make(.recovering) }
}

extension CallbackType where Event == RecoveredEvent {
    /// The reliable connection was recovered on a new socket.
    public static var recovered: Self { .make(.recovered) }
}

/// A registration made with ``WebPubSubClient/subscribe(_:_:)``; pass it to
/// ``WebPubSubClient/unsubscribe(_:)`` to remove the handler.
public struct Subscription: Sendable, Hashable {
    let id: UInt64
}

//! WebSocket close codes Conclave sends or reports (RFC 6455 §7.4, plus the IANA-registered
//! 1012/1013). Gateways send them to clients; nodes see them in `on_close`.

/// The connection did its job (also: replaced by a newer socket with the same id).
pub const NORMAL: u16 = 1000;
/// The server is going away (shutdown) or the client stopped answering pings.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The client's close frame carried no code. Never sent on the wire.
pub const NO_STATUS: u16 = 1005;
/// The connection ended without a close frame. Never sent on the wire.
pub const ABNORMAL: u16 = 1006;
/// A text message was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// The client broke a policy: its message rate went over the limit.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message was over the size limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The party's `on_connect` failed.
pub const INTERNAL_ERROR: u16 = 1011;
/// No node took the socket over in time: reconnect.
pub const SERVICE_RESTART: u16 = 1012;
/// The client does not read fast enough: its send queue is full.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Whether `code` may appear in a close frame (1005 and 1006 only describe what happened).
pub fn is_sendable(code: u16) -> bool {
    !matches!(code, NO_STATUS | ABNORMAL)
}

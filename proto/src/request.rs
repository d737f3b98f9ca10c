//! Request/reply over a relay link. Each request names its reply type, so a caller gets
//! the reply it asked for (`RelayRequest::Reply`) instead of matching node events by hand.

use crate::wire::{
    gateway_event, node_event, Admit, AdmitReply, HomeReply, HomeRequest, HttpReply, HttpRequest,
    RoomInfoReply, RoomInfoRequest,
};

/// A gateway→node event that the node answers with exactly one reply carrying its id.
pub trait RelayRequest: Send + 'static {
    type Reply: Send + 'static;
    /// The event to send, stamped with a request id unique on its link.
    fn into_event(self, request_id: u64) -> gateway_event::Event;
    /// The reply, if `event` is this request's kind of reply.
    fn reply(event: node_event::Event) -> Option<Self::Reply>;
}

/// The request id a node event answers, if it is a reply.
pub fn reply_id(event: &node_event::Event) -> Option<u64> {
    use node_event::Event;
    match event {
        Event::AdmitReply(r) => Some(r.request_id),
        Event::HttpReply(r) => Some(r.request_id),
        Event::RoomInfoReply(r) => Some(r.request_id),
        Event::HomeReply(r) => Some(r.request_id),
        Event::Send(_)
        | Event::Deliver(_)
        | Event::CloseSocket(_)
        | Event::Ack(_)
        | Event::ConnState(_)
        | Event::Moved(_)
        // A request of the node's own (answered by the gateway), not a reply.
        | Event::RoomFetch(_) => None,
    }
}

macro_rules! relay_request {
    ($request:ident => $variant:ident, $reply:ident => $reply_variant:ident) => {
        impl RelayRequest for $request {
            type Reply = $reply;
            fn into_event(mut self, request_id: u64) -> gateway_event::Event {
                self.request_id = request_id;
                gateway_event::Event::$variant(self)
            }
            fn reply(event: node_event::Event) -> Option<$reply> {
                match event {
                    node_event::Event::$reply_variant(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

relay_request!(Admit => Admit, AdmitReply => AdmitReply);
relay_request!(HttpRequest => HttpRequest, HttpReply => HttpReply);
relay_request!(RoomInfoRequest => RoomInfo, RoomInfoReply => RoomInfoReply);
relay_request!(HomeRequest => Home, HomeReply => HomeReply);

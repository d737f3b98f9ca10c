//! Where the answers go of requests whose `onRequest` went on after its event, by id
//! (`Worker::drive`); an instance's going drops them, and its requesters hear so.

use super::InstanceId;
use crate::message::Response;
use std::collections::HashMap;
use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct LaterAnswers {
    by_id: HashMap<u32, (InstanceId, oneshot::Sender<Response>)>,
    next_id: u32,
}

impl LaterAnswers {
    /// An id for the answer `instance` will give a request after its event, and where the
    /// answer will arrive. Requesters that gave up are forgotten here.
    pub(super) fn later(&mut self, instance: InstanceId) -> (u32, oneshot::Receiver<Response>) {
        self.by_id.retain(|_, (_, to)| !to.is_closed());
        let mut id = self.next_id;
        while self.by_id.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        let (to, from) = oneshot::channel();
        self.by_id.insert(id, (instance, to));
        (id, from)
    }

    /// Where `instance`'s answer `id` goes, once.
    pub(super) fn take(
        &mut self,
        instance: InstanceId,
        id: u32,
    ) -> Option<oneshot::Sender<Response>> {
        match self.by_id.get(&id) {
            Some((i, _)) if *i == instance => self.by_id.remove(&id).map(|(_, to)| to),
            _ => None,
        }
    }

    /// Drops `instance`'s answers: their requesters hear that it went.
    pub(super) fn forget(&mut self, instance: InstanceId) {
        self.by_id.retain(|_, (i, _)| *i != instance);
    }
}

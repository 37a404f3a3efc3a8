//! Subscription multiplexing: identical subscriptions share one execution.
//!
//! A progress bar on 10,000 screens is 10,000 identical `jobProgress` subscriptions. Executed
//! one by one, every change of the job would be resolved and built 10,000 times. Instead, the
//! first subscriber of a given (document, operation, variables) starts one execution (the
//! group's *leader* stream, driven by a task of its own); every subscriber of the group,
//! the first included, reads the responses it publishes on a `watch` channel. The semantics
//! are those of one execution per subscriber: the first message is the latest state, nothing
//! is reordered, a slow reader skips to the latest response (coalesced), and the stream
//! ends after the execution's last response. The execution stops when its last subscriber
//! leaves.
//!
//! A WebSocket connection joins a group through [`Multiplexed::shared`] and writes the
//! group's responses, serialized once by the leader, to its client. Only subscriptions are
//! grouped: queries and mutations sent over a WebSocket run per request, as they must, through
//! the [`Executor`] implementation, which runs every operation it is given on its own. Who subscribes is part of the key: only connections whose callers
//! see the same data with the same rights ([`Principal::sharing_key`]: one tenant and set of
//! scopes, or one progress token's job) share an execution, so one caller's rights never
//! serve another; within a group the leader's connection data stands for all.

use super::AutosSchema;
use crate::auth::Principal;
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Executor, Request, Response};
use futures::stream::{BoxStream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A response of a shared execution as JSON (the `payload` of a WebSocket message),
/// serialized once for all the group's subscribers.
pub type Payload = Arc<str>;

/// What a group has published so far.
#[derive(Clone, Default)]
struct Published {
    /// Number of the latest response (1 for the first).
    seq: u64,
    response: Option<Payload>,
    /// The execution has ended: after `response`, nothing more comes.
    ended: bool,
}

type Key = (String, String, Option<String>, String);
type Groups = Mutex<HashMap<Key, Arc<watch::Sender<Published>>>>;

/// The schema, with identical subscriptions sharing one execution.
#[derive(Clone)]
pub struct Multiplexed {
    schema: AutosSchema,
    groups: Arc<Groups>,
}

impl Multiplexed {
    /// Wraps `schema`.
    pub fn new(schema: AutosSchema) -> Self {
        Multiplexed {
            schema,
            groups: Arc::default(),
        }
    }
}

fn lock(groups: &Groups) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<watch::Sender<Published>>>> {
    groups.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the operation `request` would run is a subscription.
fn is_subscription(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let mut operations = document.operations.iter();
    let operation = match request.operation_name.as_deref() {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        // Without a name the document must hold exactly one operation, or it is an error
        // that the schema reports: let it.
        None => operations.next().filter(|_| operations.next().is_none()),
    };
    operation.is_some_and(|(_, op)| op.node.ty == OperationType::Subscription)
}

/// Takes `key` out of the map if it still names this group's channel.
fn forget(
    groups: &mut HashMap<Key, Arc<watch::Sender<Published>>>,
    key: &Key,
    sender: &Arc<watch::Sender<Published>>,
) {
    if groups.get(key).is_some_and(|g| Arc::ptr_eq(g, sender)) {
        groups.remove(key);
    }
}

/// Whether `request` may share an execution: a subscription, with nothing the key does not
/// see (request-level data, uploads, extensions; the API sets none of them).
fn shareable(request: &Request) -> bool {
    request.data.is_empty()
        && request.uploads.is_empty()
        && request.extensions.is_empty()
        && is_subscription(request)
}

impl Multiplexed {
    /// The responses of `request`'s shared execution for the caller `who`, each serialized
    /// once for every subscriber of the group (a WebSocket connection writes the same bytes to
    /// each), or `None` when it is not to be shared. `data` makes the caller's context,
    /// called only when the execution starts here (a connection that joins one builds none).
    pub fn shared(
        &self,
        request: Request,
        who: &Principal,
        data: impl FnOnce() -> Arc<Data>,
    ) -> Option<BoxStream<'static, Payload>> {
        if !shareable(&request) {
            return None;
        }
        let key = (
            who.sharing_key(),
            request.query.clone(),
            request.operation_name.clone(),
            serde_json::to_string(&request.variables).unwrap_or_default(),
        );
        let receiver = {
            let mut groups = lock(&self.groups);
            match groups.get(&key) {
                Some(group) => group.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(Published::default());
                    let sender = Arc::new(sender);
                    groups.insert(key.clone(), sender.clone());
                    let leader = Executor::execute_stream(&self.schema, request, Some(data()));
                    tokio::spawn(lead(leader, sender, self.groups.clone(), key));
                    receiver
                }
            }
        };
        Some(follow(receiver).boxed())
    }
}

/// Operations handed to the GraphQL protocol (queries, mutations, and a subscription whose id
/// the protocol already runs) each run on their own.
impl Executor for Multiplexed {
    async fn execute(&self, request: Request) -> Response {
        self.schema.execute(request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        Executor::execute_stream(&self.schema, request, session_data)
    }
}

/// Drives a group's execution, publishing each response, until it ends or nobody listens.
async fn lead(
    mut leader: BoxStream<'static, Response>,
    sender: Arc<watch::Sender<Published>>,
    groups: Arc<Groups>,
    key: Key,
) {
    loop {
        tokio::select! {
            next = leader.next() => match next {
                Some(response) => {
                    // Serialized here, once, not by each subscriber's connection.
                    let json: Payload = match serde_json::to_string(&response) {
                        Ok(json) => json.into(),
                        Err(err) => {
                            tracing::error!(error = %err, "cannot serialize a subscription's response");
                            r#"{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#.into()
                        }
                    };
                    sender.send_modify(|p| {
                        p.seq += 1;
                        p.response = Some(json);
                    });
                }
                None => {
                    // Out of the map first: a later subscriber starts a fresh execution
                    // rather than joining one that has ended.
                    forget(&mut lock(&groups), &key, &sender);
                    sender.send_modify(|p| p.ended = true);
                    return;
                }
            },
            _ = sender.closed() => {
                // Someone may have joined since `closed` fired; joining holds the map's lock.
                let mut map = lock(&groups);
                if sender.receiver_count() == 0 {
                    forget(&mut map, &key, &sender);
                    return;
                }
            }
        }
    }
}

/// One subscriber's view of a group: every response it has not seen, the latest first when
/// it falls behind, then the end.
fn follow(receiver: watch::Receiver<Published>) -> impl futures::Stream<Item = Payload> {
    futures::stream::unfold((receiver, 0u64), |(mut receiver, seen)| async move {
        loop {
            let published = receiver.borrow_and_update().clone();
            if let Some(response) = published.response.filter(|_| published.seq > seen) {
                return Some((response, (receiver, published.seq)));
            }
            if published.ended {
                return None;
            }
            // The sender is gone only if the leader stopped without ending (shutdown).
            receiver.changed().await.ok()?;
        }
    })
}

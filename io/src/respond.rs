//! Server handles off the node's task: [`ServerHandle`] and [`Responder`].
//!
//! A plain [`KvHandle`] runs on the node's own task, which costs nothing
//! for a quick handle such as the default store; a slow one, though,
//! holds up every other request and the node's heartbeats, until the
//! scheduler declares the server dead. The core can answer a request any
//! time after it surfaced it, so a handle may instead take each request
//! with a [`Responder`] and answer when it likes, from any thread (a
//! deferred handle), or run on a thread of its own (a threaded handle,
//! built on responders). Either way the answers travel back to the
//! driver as `msg::Answer`s, and the node's task never waits for them.

use std::fmt;
use std::sync::mpsc as std_mpsc;

use pslite_core::{KvHandle, Refusal, Response, ServerRequest, ServerRequestId, SimpleRequest};

use crate::error::{Error, Result};
use crate::msg::{Answer, AnswerSender, Job, KvServe, SimpleHandler, SimpleServe};

/// How a node runs the server handle of one application: what
/// [`NodeHandle::set_handle`](crate::NodeHandle::set_handle) and
/// [`KvServer::start`](crate::KvServer::start) take. Any [`KvHandle`]
/// converts into an inline one, so `set_handle(app, store)` keeps the
/// cheapest mode.
///
/// | Mode | The handle runs | Fits |
/// |---|---|---|
/// | [`inline`](Self::inline) | on the node's task, between its other work | quick handles (the default store's sums) |
/// | [`threaded`](Self::threaded) | on a thread of its own, one request after another | slow, stateful handles |
/// | [`deferred`](Self::deferred) | wherever you send it; you answer through a [`Responder`] | thread pools, async work, batching, answers out of order |
///
/// An inline handle that takes longer than the heartbeat timeout gets its
/// server declared dead, and while it works no other request of any
/// application is served: move such work off the node's task.
///
/// ```no_run
/// # async fn run(node: pslite_io::NodeHandle, model: impl pslite_core::KvHandle) -> pslite_io::Result<()> {
/// use pslite_io::ServerHandle;
/// // The default sums stay on the node's task; the slow model gets a thread.
/// node.set_handle(0, pslite_core::KvStore::<f32>::new()).await?;
/// node.set_handle(1, ServerHandle::threaded(model)).await?;
/// # Ok(()) }
/// ```
pub struct ServerHandle {
    mode: Mode,
}

enum Mode {
    Inline(Box<dyn KvHandle>),
    Threaded(Box<dyn KvHandle>),
    Deferred(Box<dyn FnMut(ServerRequest, Responder) + Send>),
}

impl ServerHandle {
    /// Runs `handle` on the node's own task: no hand-off and no thread,
    /// but the node does nothing else while it works. For handles that
    /// answer in far less than the heartbeat interval.
    ///
    /// ```no_run
    /// # async fn run(node: pslite_io::NodeHandle) -> pslite_io::Result<()> {
    /// use pslite_io::ServerHandle;
    /// node.set_handle(0, ServerHandle::inline(pslite_core::KvStore::<f32>::new())).await?;
    /// # Ok(()) }
    /// ```
    pub fn inline(handle: impl KvHandle) -> Self {
        Self { mode: Mode::Inline(Box::new(handle)) }
    }

    /// Runs `handle` on a thread of its own, which answers the app's
    /// requests one after another in the order they arrived; the node's
    /// task only hands them over, so heartbeats and other applications
    /// never wait for it.
    ///
    /// The thread is started when the handle is installed and ends when
    /// the node ends or the handle is replaced (requests handed over
    /// before that are still answered, unless the node is gone). A panic
    /// in `handle` ends the thread: the request it was on and every later
    /// one of the app are refused, and the node keeps serving the rest.
    ///
    /// ```no_run
    /// # async fn run(node: pslite_io::NodeHandle) -> pslite_io::Result<()> {
    /// use pslite_core::{KvHandle, Response, ServerRequest};
    /// use pslite_io::ServerHandle;
    ///
    /// struct Model; // slow to evaluate
    /// impl KvHandle for Model {
    ///     fn handle(&mut self, request: &ServerRequest) -> Response {
    ///         Response::ack()
    ///     }
    /// }
    /// node.set_handle(1, ServerHandle::threaded(Model)).await?;
    /// # Ok(()) }
    /// ```
    pub fn threaded(handle: impl KvHandle) -> Self {
        Self { mode: Mode::Threaded(Box::new(handle)) }
    }

    /// Hands each request to `handle` with a [`Responder`] for its answer,
    /// which may come later and from any thread, in any order. `handle`
    /// itself runs on the node's task: it should only pass the request on
    /// (to a channel, a pool, a task).
    ///
    /// ```no_run
    /// # async fn run(node: pslite_io::NodeHandle) -> pslite_io::Result<()> {
    /// use pslite_core::{Response, ServerRequest};
    /// use pslite_io::{Responder, ServerHandle};
    ///
    /// let (queue, requests) = std::sync::mpsc::channel::<(ServerRequest, Responder)>();
    /// node.set_handle(1, ServerHandle::deferred(move |request, responder| {
    ///     // Should the queue be gone, the dropped responder refuses the request.
    ///     let _ = queue.send((request, responder));
    /// }))
    /// .await?;
    /// std::thread::spawn(move || {
    ///     for (request, responder) in requests {
    ///         let _ = responder.respond(Response::ack());
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn deferred(handle: impl FnMut(ServerRequest, Responder) + Send + 'static) -> Self {
        Self { mode: Mode::Deferred(Box::new(handle)) }
    }

    /// What the driver runs for application `app`; starts the thread of a
    /// threaded handle.
    pub(crate) fn install(self, app: u32) -> std::io::Result<KvServe> {
        Ok(match self.mode {
            Mode::Inline(handle) => KvServe::Inline(handle),
            Mode::Threaded(handle) => threaded(app, handle)?,
            Mode::Deferred(mut handle) => KvServe::Deferred(Box::new(move |request, answers| {
                let responder = Responder::new(request.id, answers);
                handle(request, responder);
            })),
        })
    }
}

impl<H: KvHandle> From<H> for ServerHandle {
    /// The handle, run inline.
    fn from(handle: H) -> Self {
        Self::inline(handle)
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Inline(_) => "inline",
            Mode::Threaded(_) => "threaded",
            Mode::Deferred(_) => "deferred",
        };
        f.debug_struct("ServerHandle").field("mode", &mode).finish()
    }
}

/// The way back for one request a [deferred](ServerHandle::deferred)
/// handle took: [`respond`](Self::respond) once the answer is ready, from
/// any thread. It is small, `Send` and `'static`, so it can travel with
/// the request to wherever the work happens.
///
/// A responder dropped without an answer refuses its request (with
/// [`Refusal::Handle`]), so the worker's wait fails at once with
/// [`RequestError::Refused`](pslite_core::RequestError::Refused) instead
/// of hanging until `request_timeout`; a handle that panics while holding
/// responders refuses their requests the same way.
///
/// ```no_run
/// # fn slow_model(_: &pslite_core::ServerRequest) -> pslite_core::Response { pslite_core::Response::ack() }
/// # fn run(request: pslite_core::ServerRequest, responder: pslite_io::Responder) {
/// // In a deferred handle: the work moves to another thread.
/// std::thread::spawn(move || {
///     let response = slow_model(&request);
///     let _ = responder.respond(response);
/// });
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a responder dropped without an answer refuses its request"]
pub struct Responder {
    id: ServerRequestId,
    /// The driver's answer queue; `None` once answered.
    answers: Option<AnswerSender>,
}

impl Responder {
    fn new(id: ServerRequestId, answers: AnswerSender) -> Self {
        Self { id, answers: Some(answers) }
    }

    /// Answers the request. `Ok` once the node took the answer (it then
    /// reaches the worker, unless the worker died meanwhile and nobody
    /// waits for it); [`Error::Shutdown`] when the node has ended.
    ///
    /// ```no_run
    /// # fn run(responder: pslite_io::Responder) {
    /// use pslite_core::{Refusal, Response};
    /// if let Err(error) = responder.respond(Response::Refused(Refusal::Handle("busy".into()))) {
    ///     eprintln!("the node is gone: {error}");
    /// }
    /// # }
    /// ```
    pub fn respond(mut self, response: Response) -> Result<()> {
        let answers = self.answers.take().expect("a responder answers once: respond takes it");
        answers.send(Answer::Kv { id: self.id, response, state: None }).map_err(|_| Error::Shutdown)
    }

    /// The request this responder answers (the one the handle was given
    /// with it), e.g. to match answers to requests kept elsewhere.
    ///
    /// ```no_run
    /// # fn run(responder: pslite_io::Responder) {
    /// let id = responder.id();
    /// println!("request {} of customer {:?} from {}", id.ts.0, id.customer, id.from);
    /// # }
    /// ```
    pub fn id(&self) -> ServerRequestId {
        self.id
    }

    /// Whether the node has ended, so no answer could reach it.
    fn is_closed(&self) -> bool {
        self.answers.as_ref().is_none_or(AnswerSender::is_closed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(answers) = self.answers.take() {
            let reason = Refusal::Handle("the server handle dropped the request without answering".to_owned());
            // Nobody to tell when the node has ended.
            let _ = answers.send(Answer::Kv { id: self.id, response: Response::Refused(reason), state: None });
        }
    }
}

/// What a threaded handle's thread takes from its queue. A request
/// travels with its responder, so one dropped unanswered (the thread
/// panicked with it queued, or was gone already) is refused.
enum Queued {
    Request(ServerRequest, Responder, bool),
    Install(pslite_core::KvList),
    Export(pslite_core::ExportTicket, pslite_core::KeyRange, usize, usize, AnswerSender),
    Forget(pslite_core::KeyRange),
}

/// A [`threaded`](ServerHandle::threaded) handle: its thread, and what the
/// driver calls to hand it a request or a state to install.
fn threaded(app: u32, mut handle: Box<dyn KvHandle>) -> std::io::Result<KvServe> {
    let (jobs, queue) = std_mpsc::channel::<Queued>();
    // The queue needs no bound of its own: each request in it is pending
    // in the node, which holds at most `requests_pending_max`, and each
    // install is a batch the node applied.
    spawn(format!("pslite-handle-{app}"), move || {
        // Ends when the driver drops `jobs`: the node ended or the handle
        // was replaced.
        for job in queue {
            match job {
                Queued::Request(request, mut responder, export) => {
                    if responder.is_closed() {
                        // The node is gone; its requests need no work.
                        continue;
                    }
                    let response = handle.handle(&request);
                    let state = if export { handle.export(&request.keys) } else { None };
                    if let Some(answers) = responder.answers.take() {
                        // An error only says the node ended meanwhile.
                        let _ = answers.send(Answer::Kv { id: request.id, response, state });
                    }
                }
                Queued::Install(state) => {
                    if let Err(error) = handle.install(&state) {
                        tracing::error!(%error, app, "a replicated state could not be installed");
                    }
                }
                Queued::Export(ticket, keys, keys_max, bytes_max, answers) => {
                    let state = handle.export_range(keys, keys_max, bytes_max);
                    let _ = answers.send(Answer::Exported { ticket, state });
                }
                Queued::Forget(range) => {
                    if let Err(error) = handle.forget_range(range) {
                        tracing::error!(%error, app, "a partial copy of a range could not be dropped");
                    }
                }
            }
        }
    })?;
    Ok(KvServe::Threaded(Box::new(move |job| {
        let queued = match job {
            Job::Request { request, answers, export } => {
                let responder = Responder::new(request.id, answers);
                Queued::Request(request, responder, export)
            }
            Job::Install(state) => Queued::Install(state),
            Job::Export { ticket, keys, keys_max, bytes_max, answers } => {
                Queued::Export(ticket, keys, keys_max, bytes_max, answers)
            }
            Job::Forget(range) => Queued::Forget(range),
        };
        // Fails only when the thread is gone (the handle panicked): the job
        // comes back in the error, and its dropped responder refuses.
        let _ = jobs.send(queued);
    })))
}

/// A SimpleApp handler on a thread of its own, as
/// [`NodeHandle::set_threaded_simple_handler`](crate::NodeHandle::set_threaded_simple_handler)
/// installs it.
pub(crate) fn threaded_simple(mut handler: SimpleHandler) -> std::io::Result<SimpleServe> {
    let (requests, queue) = std_mpsc::channel::<(SimpleRequest, AnswerSender)>();
    spawn("pslite-simple-handler".to_owned(), move || {
        for (request, answers) in queue {
            if answers.is_closed() {
                continue;
            }
            let (head, body) = handler(&request);
            let _ = answers.send(Answer::Simple { id: request.id, head, body });
        }
    })?;
    Ok(SimpleServe::Deferred(Box::new(move |request, answers| {
        let _ = requests.send((request, answers));
    })))
}

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // Not joined: the thread ends by itself once its queue closes, and a
    // node must not wait for user code to stop.
    std::thread::Builder::new().name(name).spawn(body).map(drop)
}

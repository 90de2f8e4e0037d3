//! The accept loop: one session task per connection, all of them ended when the
//! loop receives its stop signal.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::record::Recorder;
use super::session;
use super::source::ScenarioSource;

/// Accepts connections until `stop` fires or its sender is dropped, playing the
/// scenario `source` gives for each connection's number, then aborts every
/// session and waits for them to end.
pub(crate) async fn serve(
    listener: TcpListener,
    source: Arc<dyn ScenarioSource>,
    recorder: Arc<Recorder>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sessions = JoinSet::new();
    let mut accepted = 0usize;

    loop {
        tokio::select! {
            _ = &mut stop => break,
            result = listener.accept() => match result {
                Ok((tcp, client)) => {
                    let scenario = source.scenario(accepted);
                    accepted += 1;
                    let log = recorder.open(client);
                    sessions.spawn(session::run(tcp, scenario, log));
                }
                Err(error) => {
                    // EMFILE and the like: the listener stays usable once they clear.
                    tracing::warn!(%error, "fault peer failed to accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(joined) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "fault peer session task failed");
                }
            }
        }
    }

    sessions.shutdown().await;
}

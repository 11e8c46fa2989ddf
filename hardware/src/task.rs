//! Small task helpers shared by the agent and the link client.

/// Stops the reader task however the driver ends, even when the session is
/// dropped and the driver itself aborted.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

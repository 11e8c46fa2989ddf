//! Small task helpers shared by the agent and the link client.

use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::frame::{read_frame, Frame, FrameError};

/// Stops the reader task however the driver ends, even when the session is
/// dropped and the driver itself aborted.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames on a task of their own until the first error (which is
/// passed on too), so a partly read frame is never dropped by a `select!`
/// that chose another branch. Dropping the handle stops the task.
pub(crate) fn read_frames_in_background<R>(
    mut rd: R,
    queue: usize,
) -> (mpsc::Receiver<Result<Frame, FrameError>>, AbortOnDrop)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(queue);
    let reader = tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut rd).await;
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, AbortOnDrop(reader))
}

//! [`Pipeline`]: many commands in one write on the async connection, their replies read
//! together, redeemed with the same [`Handle`]s and [`Replies`] as the blocking client's.

use super::AsyncClient;
use crate::command::{Cmd, Reply};
use crate::error::{missing_reply, Result};
use crate::pipeline::{Handle, Replies};

/// Calls queued to be sent together on an [`AsyncClient`]'s connection. Build one with
/// [`AsyncClient::pipeline`].
///
/// ```no_run
/// # async fn demo(client: agora_client::aio::AsyncClient) -> agora_client::Result<()> {
/// let list = client.object(|c| c.list::<i64>()).await?;
/// let mut p = client.pipeline();
/// for i in 0..100 {
///     p.add(list.proxy().append_cmd(&i));
/// }
/// let len = p.add(list.proxy().len_cmd());
/// let replies = p.execute().await?;
/// assert_eq!(replies.get(len)?, 100);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipeline {
    client: AsyncClient,
    queued: crate::Pipeline,
}

impl Pipeline {
    pub(crate) fn new(client: AsyncClient) -> Pipeline {
        let queued = client.blocking().pipeline();
        Pipeline { client, queued }
    }

    /// Queues a command, as [`crate::Pipeline::add`].
    pub fn add<T>(&mut self, cmd: Cmd<T>) -> Handle<T> {
        self.queued.add(cmd)
    }

    /// How many calls are queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// True when no call is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends every queued call in one write and waits for every reply, as
    /// [`crate::Pipeline::execute`]. Dropping the future before it completes drops the
    /// replies when they come; the calls run all the same.
    pub async fn execute(self) -> Result<Replies> {
        let conn = self.client.connection().await?;
        let (calls, mut replies) = self.queued.checked_calls(conn.run(), conn.run_key());
        let to_send: Vec<(&str, &crate::command::Args)> = calls.iter().flatten().copied().collect();
        let pending = conn.start_many(&to_send)?;
        let slots: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].is_some()).collect();
        drop(to_send);
        drop(calls);
        for (slot, call) in slots.into_iter().zip(pending) {
            let reply = call.reply().await;
            if let Ok(result) = &reply {
                self.client.adopt(&conn, result).await;
            }
            replies[slot] = Some(reply);
        }
        // Replies are decoded into the blocking client's proxies, of its run.
        let run = self.client.blocking().target(0).run;
        Ok(self
            .queued
            .into_replies(filled(replies), run, Default::default()))
    }
}

/// The replies filed by index (`None`: a reply that never came, an error).
fn filled(replies: Vec<Option<Reply>>) -> Vec<Reply> {
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(missing_reply())))
        .collect()
}

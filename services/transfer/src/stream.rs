//! The export's body as a stream of `google.api.HttpBody` parts: the
//! document's opening, the activity log as it arrives from stats, and the
//! closing. The next entry is asked for only when the previous part was
//! taken, so the reader's pace holds the reading back, and dropping the
//! stream (the client went away) ends it.

use std::{pin::Pin, sync::Arc};

use bytes::{BufMut, BytesMut};
use fleet_kit::{SharedClock, error::internal};
use fleet_proto::{google::api::HttpBody, stats::v1::ActivityEntry};
use futures::{Stream, StreamExt};
use tonic::{Status, Streaming};
use uuid::Uuid;

use crate::{
    document::{self, ActivityRecord, Head},
    store::TransferStore,
    table::TableWriter,
};

/// A part is sent once it holds this much.
const PART_BYTES: usize = 64 * 1024;

/// The parts of an export's body.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<HttpBody, Status>> + Send + 'static>>;

/// The formats an export is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON document.
    Json,
    /// One CSV table (see [`crate::table`]).
    Csv,
}

impl Format {
    /// The format a request names: `json` (or nothing) or `csv`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// Its name, as requests, records and file names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A document being written, in its format.
enum Writer {
    Json { buffer: BytesMut, entries: u64 },
    Csv(Box<TableWriter>),
}

impl Writer {
    fn new(format: Format, head: &Head<'_>) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Json => {
                let mut buffer = BytesMut::with_capacity(PART_BYTES * 2);
                buffer.put_slice(&head.opening()?);
                Self::Json { buffer, entries: 0 }
            }
            Format::Csv => Self::Csv(Box::new(TableWriter::new(head)?)),
        })
    }

    fn entry(&mut self, record: &ActivityRecord) -> anyhow::Result<()> {
        match self {
            Self::Json { buffer, entries } => {
                if *entries > 0 {
                    buffer.put_u8(b',');
                }
                serde_json::to_writer(buffer.writer(), record)?;
                *entries += 1;
            }
            Self::Csv(table) => table.activity(record)?,
        }
        Ok(())
    }

    /// Whether a part's worth is waiting.
    fn full(&self) -> bool {
        match self {
            Self::Json { buffer, .. } => buffer.len() >= PART_BYTES,
            Self::Csv(table) => table.buffered() >= PART_BYTES,
        }
    }

    fn take(&mut self) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Json { buffer, .. } => Ok(buffer.split().to_vec()),
            Self::Csv(table) => table.take(),
        }
    }

    fn finish(&mut self) -> anyhow::Result<Vec<u8>> {
        if let Self::Json { buffer, .. } = self {
            buffer.put_slice(document::CLOSING);
        }
        self.take()
    }
}

/// An export under way: its record ends as completed when the document was
/// written whole, and as failed otherwise, also when the caller went away
/// (the stream is dropped unfinished).
pub struct Run {
    /// Where its record is.
    pub store: Arc<dyn TransferStore>,
    /// The time source.
    pub clock: SharedClock,
    /// Its id.
    pub id: Uuid,
    /// Activity entries written so far.
    pub entries: u64,
    finished: bool,
}

impl Run {
    /// An export that was recorded as running.
    pub fn new(store: Arc<dyn TransferStore>, clock: SharedClock, id: Uuid) -> Self {
        Self {
            store,
            clock,
            id,
            entries: 0,
            finished: false,
        }
    }

    async fn complete(mut self) -> Result<(), Status> {
        self.finished = true;
        self.store
            .complete_export(self.id, self.entries, self.clock.now())
            .await
            .map_err(|e| internal(&e))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (store, id, entries, now) = (self.store.clone(), self.id, self.entries, self.clock.now());
        tracing::info!(export = %id, entries, "an export ended before its end");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = store.fail_export(id, entries, now).await {
                    tracing::warn!(export = %id, error = format!("{err:#}"), "recording a failed export");
                }
            });
        }
    }
}

/// The body of an export in `format`: `head`, then the entries of
/// `activity`, a part at a time.
pub fn body(
    format: Format,
    head: &Head<'_>,
    activity: Streaming<ActivityEntry>,
    run: Run,
) -> anyhow::Result<BodyStream> {
    struct State {
        activity: Streaming<ActivityEntry>,
        writer: Writer,
        run: Option<Run>,
        content_type: &'static str,
    }
    let state = State {
        activity,
        writer: Writer::new(format, head)?,
        run: Some(run),
        content_type: format.content_type(),
    };
    let part = |content_type: &str, data: Vec<u8>| HttpBody {
        content_type: content_type.to_string(),
        data,
        extensions: Vec::new(),
    };
    let failed = |err: anyhow::Error| internal(&err);
    Ok(Box::pin(futures::stream::unfold(state, move |mut state| async move {
        let run = state.run.as_mut()?;
        loop {
            match state.activity.next().await {
                Some(Ok(entry)) => {
                    if let Err(err) = state.writer.entry(&ActivityRecord::from(entry)) {
                        state.run = None;
                        return Some((Err(failed(err)), state));
                    }
                    run.entries += 1;
                    if state.writer.full() {
                        let data = state.writer.take().map_err(failed);
                        return Some((data.map(|d| part(state.content_type, d)), state));
                    }
                }
                Some(Err(status)) => {
                    state.run = None;
                    return Some((Err(status), state));
                }
                None => {
                    let data = match state.writer.finish() {
                        Ok(data) => data,
                        Err(err) => {
                            state.run = None;
                            return Some((Err(failed(err)), state));
                        }
                    };
                    let done = state.run.take()?.complete().await;
                    return Some((done.map(|()| part(state.content_type, data)), state));
                }
            }
        }
    })))
}

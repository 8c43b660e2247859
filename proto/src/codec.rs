//! The codec of every generated client and server: prost's, plus the field
//! rules. A request whose fields break their rules is refused while it is
//! decoded, with `INVALID_ARGUMENT` and one `google.rpc.BadRequest` violation
//! per broken field, before any handler runs; so every service validates
//! every RPC the same way, whoever calls it.

use std::marker::PhantomData;

use prost::{Message, Name, bytes::Buf};
use prost_reflect::DynamicMessage;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use crate::rules::{self, Violation};

/// Prost's codec, with the field rules checked on decode.
#[derive(Debug, Clone)]
pub struct ValidatingCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ValidatingCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ValidatingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ValidatingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ValidatingDecoder(PhantomData)
    }
}

/// Decodes `U` and checks its rules.
#[derive(Debug, Clone)]
pub struct ValidatingDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for ValidatingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        let item = U::decode(bytes.clone()).map_err(|e| Status::internal(e.to_string()))?;
        let Some(desc) = rules::pool().get_message_by_name(&U::full_name()) else {
            return Ok(Some(item));
        };
        if !rules::has_rules(&desc) {
            return Ok(Some(item));
        }
        let dynamic = DynamicMessage::decode(desc, bytes).map_err(|e| Status::internal(e.to_string()))?;
        let violations = rules::check(&dynamic);
        if violations.is_empty() {
            Ok(Some(item))
        } else {
            Err(invalid_argument(&violations))
        }
    }
}

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` detail per field.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    with_violations(Code::InvalidArgument, violations)
}

/// A status of `code` that names the fields at fault, as
/// `google.rpc.BadRequest` details (the gateway lists them in `errors`).
pub fn with_violations(code: Code, violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.message.clone());
    }
    let summary: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect();
    Status::with_error_details(code, format!("invalid request: {}", summary.join("; ")), details)
}

//! The protobuf codec of every generated client and server: tonic-prost's,
//! with small starting buffers.
//!
//! tonic starts each stream's encode and decode buffer at 8 KiB and keeps it
//! for the stream's life. A token is a few dozen bytes, and the gateway holds
//! two such buffers per open request, the batcher one: at 10,000 open
//! streams that was most of the mesh's memory. Buffers still grow to
//! whatever a message needs, and the yield threshold (how many encoded bytes
//! are sent at once when the stream has several messages ready) stays
//! tonic's 32 KiB.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffer.
pub const BUFFER_BYTES: usize = 256;
/// Encoded bytes past which an encoding stream hands what it has to the
/// connection (tonic's default).
pub const YIELD_BYTES: usize = 32 * 1024;

/// A [`tonic_prost::ProstCodec`] with [`BUFFER_BYTES`] starting buffers.
#[derive(Debug)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

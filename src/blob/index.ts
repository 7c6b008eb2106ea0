export { createChunker, gearTable, type ChunkParams, type Chunker } from './chunker.js'
export { encodeBlob, decodeBlob, openBlob, blobAad, BlobCorruptError, BLOB_ID_BYTES, FRAME_BYTES, type EncodedBlob, type EncodeOptions, type OpenedBlob } from './codec.js'
export { BlobWorkerPool, type BlobEncoder, type BlobWorkerInit, type EncodedChunk } from './pool.js'
export { NativeEncoder } from './native-encoder.js'
export {
  SegmentBuilder,
  SegmentCorruptError,
  readSegmentIndex,
  verifySegment,
  segmentKey,
  newSegmentId,
  SEGMENT_MAGIC,
  TRAILER_BYTES,
  type BlobRef,
} from './segment.js'
export { BlobStore, ChunkedWriter, BlobReadError, indexKey, indexAad, type BlobStoreOptions, type BlobStats, type PlacedChunk, type SegmentSource } from './blob-store.js'
export { Relocations, RELOC_PREFIX } from './relocations.js'

export { Sealer, Opener, DecryptError, SEAL_OVERHEAD } from './aead.js'
export { RepoKeys, type KeyPurpose } from './keys.js'
export {
  FORMAT,
  FORMAT_VERSION,
  ARGON2_MEM,
  ARGON2_OPS,
  ConfigError,
  WrongKeyError,
  addSlot,
  canonicalJson,
  encodeConfig,
  newConfig,
  parseConfig,
  unlock,
  verifyConfig,
  type Credential,
  type KdfParams,
  type KeySlot,
  type RepoConfig,
} from './config.js'
export { KEY_FILE_BYTES, KeyFileError, createKeyFile, readKeyFile } from './keyfile.js'

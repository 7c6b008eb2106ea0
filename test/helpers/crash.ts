// The crash-trial checks live with the soak harness (bench/soak.ts); tests use the same ones.
export { allowedStates, checkState, checkSurvivors } from '../../bench/crash-check.js'

#!/usr/bin/env node
// enclave-agent: the robot agent (see client/agent/README.md). Runs the compiled code from `npm run build`.
import '../dist/client/agent/main.js';

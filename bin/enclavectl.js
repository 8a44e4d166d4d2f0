#!/usr/bin/env node
// enclavectl: the admin CLI (see docs/enclavectl.md). Runs the compiled code from `npm run build`.
import '../dist/client/ctl/main.js';

#!/usr/bin/env node
// Compiled by `npm run build` (run automatically by `npm ci` through the `prepare` script).
import { main } from '../dist/server/main.js';

const code = await main();
if (code >= 0) process.exit(code);

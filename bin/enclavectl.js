#!/usr/bin/env node
process.stderr.write('enclavectl: not yet implemented (see the README, "Status")\n');
process.exit(2);

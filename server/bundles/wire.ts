/**
 * The answer header by which the server asks an agent to send its report (`POST /v1/robot/report`) on its next
 * contact instead of at once (see BundlesService.reportsLater). The agent's side: client/common/robot-wire.ts.
 */
export const REPORT_HEADER = 'Enclave-Report';
export const REPORT_ON_NEXT_CONTACT = 'next-contact';
/**
 * From this many robots long-polling on one process, an answer with a new bundle asks for the report on the
 * robot's next contact (BundlesService.reportsLater). Below it reports come at once, as an operator watching a
 * few robots expects.
 */
export const DEFAULT_REPORTS_LATER_FROM = 1000;

/** A watch's answer (`GET /v1/robot/bundle?watch=S`): one bundle per line, as JSON. */
export const WATCH_MEDIA_TYPE = 'application/x-ndjson';

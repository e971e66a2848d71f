/** The daemon's exit statuses (README "Exit codes"); the systemd unit relies on them. */
export const EXIT_OK = 0;
/** The daemon failed: could not start, did not stop within its bound, or was forced. */
export const EXIT_FAILURE = 1;
/** The command line or configuration is wrong: nothing was started, retrying will not help. */
export const EXIT_USAGE = 2;

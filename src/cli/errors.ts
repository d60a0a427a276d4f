/** An error the CLI reports as one line (`evalgap: …`, exit code 2) rather than a stack trace. */
export class UserError extends Error {}

/**
 * Errors the agent returns to its clients (CLI, control socket, the Docker plugin). Each has a stable
 * code, documented in docs/errors.md (a test checks that every code here is documented) and an HTTP status for
 * the control socket. Messages say what is wrong and how to fix it.
 */
export const ERROR_CODES = {
  ERR_INVALID_ARGUMENT: 400,
  ERR_NOT_FOUND: 404,
  ERR_EXISTS: 409,
  ERR_IN_USE: 409,
  ERR_NO_ADDRESS: 409,
  ERR_NO_SUBNET: 409,
  ERR_SETUP: 500,
  ERR_KV_UNAVAILABLE: 503,
  ERR_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'AgentError';
    this.code = code;
    this.status = ERROR_CODES[code];
  }
}

export const invalid = (msg: string): AgentError => new AgentError('ERR_INVALID_ARGUMENT', msg);
export const notFound = (msg: string): AgentError => new AgentError('ERR_NOT_FOUND', msg);

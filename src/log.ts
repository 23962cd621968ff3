import { pino, type Logger as PinoLogger, type LevelWithSilent, type DestinationStream } from 'pino';

/** The logger type other modules take; only this module imports pino. */
export type Logger = PinoLogger;
export type LogLevel = LevelWithSilent;

// Credentials may sit in request headers, upstream headers or config; none is ever written.
const REDACT = [
  'authorization',
  '*.authorization',
  '*.*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'password',
  '*.password',
  'token',
  '*.token',
  'access_token',
  '*.access_token',
];

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: null,
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that writes nothing, for tests and library use. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}

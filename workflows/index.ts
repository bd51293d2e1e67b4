export * from './fineTune';
export * from './generate';
export * from './chat';
export * from './sweep';

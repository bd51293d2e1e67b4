export * from './fineTune';
export * from './generate';

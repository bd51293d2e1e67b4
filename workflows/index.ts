export * from './fineTune';

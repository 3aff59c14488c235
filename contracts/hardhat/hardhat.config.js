// Hardhat 2 configuration for the local JSON-RPC node the tests start
// (tests/hardhat_node.py). Nothing is compiled: the node only serves the
// built-in "hardhat" network, with the default accounts of the standard test
// mnemonic ("test test ... junk"), each funded with 10,000 ETH.

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      chainId: 31337,
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        path: "m/44'/60'/0'/0",
        count: 20,
        accountsBalance: "10000000000000000000000",
      },
      mining: {
        auto: true,
        interval: 0,
      },
    },
  },
};
